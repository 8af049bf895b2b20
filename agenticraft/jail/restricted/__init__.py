"""``sandbox_type="restricted"``: a safe Python subset executed in-process at native speed.

Source is checked and rewritten once with RestrictedPython (cached by digest), then runs as
ordinary bytecode that calls cheap guards for attribute access, writes, ``print`` and the
operators that can build huge values. Only this package's own modules are imported here.
"""

from agenticraft.jail.restricted.compiler import compile_restricted_code
from agenticraft.jail.restricted.execute import format_user_exception, run_restricted
from agenticraft.jail.restricted.modules import SAFE_MODULES

__all__ = ["SAFE_MODULES", "compile_restricted_code", "format_user_exception", "run_restricted"]
