"""How values cross the sandbox boundary: as JSON-compatible data, never as pickles.

JSON-compatible values pass as they are; anything else becomes its ``repr`` (cut to a bound).
The receiving side parses JSON, so whatever untrusted code produces, the host gets plain data.
"""

from __future__ import annotations

import math
from typing import Any

REPR_LIMIT = 2_000
MAX_DEPTH = 20


def to_safe(value: Any, depth: int = 0) -> Any:
    """A JSON-compatible copy of ``value`` (run inside the sandbox, on the untrusted side)."""
    kind = type(value)
    if value is None or kind is bool or kind is str:
        return value
    if kind is int:
        return value if abs(value) < 2**63 else _repr(value)
    if kind is float:
        return value if math.isfinite(value) else _repr(value)
    if depth < MAX_DEPTH:
        if kind is list or kind is tuple:
            return [to_safe(v, depth + 1) for v in value]
        if kind is dict and all(type(k) is str for k in value):
            return {k: to_safe(v, depth + 1) for k, v in value.items()}
    return _repr(value)


def _repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # a hostile __repr__ must not break result delivery (but an
        # interrupt or SystemExit is not the value's to swallow)
        text = f"<unrepresentable {type(value).__name__}: {type(exc).__name__}>"
    if not isinstance(text, str):
        text = f"<unrepresentable {type(value).__name__}>"
    return text if len(text) <= REPR_LIMIT else text[:REPR_LIMIT] + "...[truncated]"


def is_plain_name(name: str, value: Any) -> bool:
    """Names a result reports: public names bound to data, not modules, functions or classes."""
    import types

    if name.startswith("_"):
        return False
    return not isinstance(value, types.ModuleType | types.FunctionType | types.BuiltinFunctionType
                          | type | types.MethodType)
