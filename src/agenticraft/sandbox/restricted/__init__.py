"""``sandbox_type="restricted"``: a safe Python subset executed in-process at native speed.

Source is checked and rewritten once with RestrictedPython (cached by digest), then runs as
ordinary bytecode that calls cheap guards for attribute access, writes, ``print`` and the
operators that can build huge values. Only this package's own modules are imported here.
"""

from .compiler import compile_restricted_code
from .executor import format_user_exception, run_restricted
from .modules import SAFE_MODULES

__all__ = ["SAFE_MODULES", "compile_restricted_code", "format_user_exception", "run_restricted"]
