"""The curated built-ins of the restricted sandbox.

Everything here is either harmless as it is (``len``, ``sorted``, ``ValueError``) or replaced by
a guarded version (``getattr``, ``pow``, ``__import__``). Left out on purpose: ``type`` (builds
classes and reveals ``__subclasses__`` paths), ``vars``/``dir``/``globals``/``locals`` (namespace
access), ``getattr``/``setattr``/``delattr`` in their raw form, ``open``/``input``/``help``
(I/O), ``exec``/``eval``/``compile``/``breakpoint`` (new code), ``memoryview``, and the
``BaseException`` branch that is not an ``Exception`` (``SystemExit``, ``KeyboardInterrupt``,
``GeneratorExit``, ``BaseException``, ``BaseExceptionGroup``/``ExceptionGroup``): sandboxed code
must not be able to raise or catch what stops or interrupts the host.
"""

from __future__ import annotations

import builtins as _py
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from agenticraft.jail.restricted.guards import (
    current_context,
    guarded_builtin_pow,
    safe_getattr,
    safe_hasattr,
)
from agenticraft.jail.restricted.modules import guarded_import
from agenticraft.jail.restricted.standins import (
    SandboxBytes,
    SandboxTuple,
    check_round,
    check_tuple_depth,
    nesting_checked_class,
)

_PLAIN_NAMES = (
    "abs", "all", "any", "ascii", "bin", "bool", "bytes", "callable", "chr", "complex", "dict",
    "divmod", "enumerate", "filter", "float", "frozenset", "hash", "hex", "int", "isinstance",
    "issubclass", "iter", "len", "list", "map", "max", "min", "next", "oct", "ord", "range",
    "repr", "reversed", "round", "set", "slice", "sorted", "str", "sum", "tuple", "zip",
    "property", "staticmethod", "classmethod", "object", "super",
    "True", "False", "None", "NotImplemented", "Ellipsis",
)

_EXCEPTION_NAMES = (
    "Exception", "ArithmeticError", "AssertionError", "AttributeError", "FloatingPointError",
    "ImportError", "IndexError", "KeyError", "LookupError", "ModuleNotFoundError", "NameError",
    "NotImplementedError", "OverflowError", "RecursionError", "RuntimeError", "StopIteration",
    "TypeError", "UnboundLocalError", "UnicodeDecodeError", "UnicodeEncodeError",
    "UnicodeError", "ValueError", "ZeroDivisionError",
)


def sandbox_print(*objects: Any, sep: str | None = " ", end: str | None = "\n",
                  file: Any = None, flush: bool = False) -> None:
    """``print`` for callers of :data:`SAFE_BUILTINS`; compiled code uses the ``_print_`` hook."""
    printer = current_context_printer()
    printer._call_print(*objects, sep=sep, end=end, file=file, flush=flush)


def current_context_printer() -> Any:
    printer = current_context().printer
    if printer is None:
        raise RuntimeError("print() is only available while sandboxed code runs")
    return printer


def sandbox_round(number: Any, ndigits: Any = None) -> Any:
    """``round``: ``round(n, -N)`` and ``round(Fraction, N)`` size-checked first."""
    if ndigits is None:
        return _py.round(number)
    check_round(number, ndigits)
    return _py.round(number, ndigits)


def sandbox_hash(obj: Any, /) -> int:
    """``hash``: tuples nested too deeply for C's recursive hash are refused."""
    if type(obj) is tuple:
        check_tuple_depth(obj)
    return _py.hash(obj)


def _build() -> dict[str, Any]:
    table: dict[str, Any] = {name: getattr(_py, name) for name in _PLAIN_NAMES}
    table.update({name: getattr(_py, name) for name in _EXCEPTION_NAMES})
    table.update({
        "getattr": safe_getattr,
        "hasattr": safe_hasattr,
        "pow": guarded_builtin_pow,
        "print": sandbox_print,
        "round": sandbox_round,
        "hash": sandbox_hash,
        "bytes": SandboxBytes,
        "tuple": SandboxTuple,
        "map": nesting_checked_class(_py.map),
        "filter": nesting_checked_class(_py.filter),
        "zip": nesting_checked_class(_py.zip),
        "enumerate": nesting_checked_class(_py.enumerate),
        # Used by the interpreter itself (class statements, import statements); user code
        # cannot name them because they start with '_'.
        "__build_class__": _py.__build_class__,
        "__import__": guarded_import,
    })
    for name in ("BaseException", "SystemExit", "KeyboardInterrupt", "GeneratorExit"):
        assert name not in table, name
    return table


#: Read-only view of the sandbox built-ins (name -> object). The executor copies them, plus its
#: hooks, into :data:`guards.SANDBOX_BUILTINS`, the dict used as ``__builtins__``.
SAFE_BUILTINS: Mapping[str, Any] = MappingProxyType(_build())

__all__ = ["SAFE_BUILTINS", "sandbox_print"]
