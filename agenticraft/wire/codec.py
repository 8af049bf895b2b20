"""The one plain-data codec: how values cross the sandbox boundary, never as pickles.

Plain data is ``None``, ``bool``, ``int`` (below 2**63, so it stays a JSON number everywhere),
finite ``float``, ``str``, and lists, tuples and dicts with ``str`` keys, nested at most
``MAX_DEPTH`` levels. Everything that crosses the boundary follows these rules:

- ``to_safe`` (results out of a sandbox, limit values in reports): anything else becomes its
  bounded ``repr``, so whatever untrusted code produces, the host gets plain data;
- ``to_plain`` / ``literal`` (data written into code that a sandbox runs: ``--in`` values, tool
  arguments, workflow inputs): anything else is refused with ``NotPlain`` saying why.

Subclasses of the plain types are not trusted (their ``repr``/``__iter__`` may be hostile): they
become their ``repr``, or are refused, unless the caller asks to ``coerce`` them to the base type
(host-side values such as a numpy float that is meant as a number).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

REPR_LIMIT = 2_000
MAX_DEPTH = 20
MAX_INT = 2**63  # larger ints cannot cross as JSON numbers
PLAIN = "plain data (None, bool, int, float, str, and lists, tuples and dicts with str keys)"


class NotPlain(ValueError):
    """A value (or something inside it) is not plain data; the message says what and why."""


def to_safe(value: Any, depth: int = 0) -> Any:
    """A JSON-compatible copy of ``value``; what is not plain data becomes its ``repr``.

    Runs inside the sandbox, on the untrusted side: it never raises, whatever ``value`` does.
    """
    return _copy(value, depth, _bounded_repr, coerce=False, keep_tuples=False)


def to_plain(value: Any, *, coerce: bool = False, keep_tuples: bool = False) -> Any:
    """A copy of ``value`` made of the plain types only, or ``NotPlain`` naming the problem.

    ``coerce``: accept subclasses of the plain types as their base type (host-side values).
    ``keep_tuples``: tuples stay tuples (for a Python literal); otherwise they become lists.
    """
    return _copy(value, 0, _refuse, coerce=coerce, keep_tuples=keep_tuples)


def literal(value: Any, *, coerce: bool = False, keep_tuples: bool = True) -> str:
    """``value`` as Python source that evaluates to the same plain data (``NotPlain`` if not)."""
    return repr(to_plain(value, coerce=coerce, keep_tuples=keep_tuples))


def safe_repr(value: Any) -> str:
    """``repr(value)`` cut to ``REPR_LIMIT``; a placeholder if ``__repr__`` misbehaves.

    Large byte strings are cut before their ``repr`` is built: the repr of a 64 MB bytearray
    is a 256 MB string, which under a memory cgroup would end the run instead of its result.
    """
    if type(value) in (bytes, bytearray) and len(value) > REPR_LIMIT:
        return f"{safe_repr(value[:REPR_LIMIT])}...[truncated, {len(value)} bytes]"
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


# -- the rules, in one walker --------------------------------------------------------------------
#: What to do with a value that is not plain data: return a stand-in, or raise.
Other = Callable[[Any, str], Any]


def _copy(value: Any, depth: int, other: Other, *, coerce: bool, keep_tuples: bool) -> Any:
    kind = type(value)
    if coerce and kind not in _EXACT:
        value, kind = _as_base(value, kind)
    if value is None or kind is bool or kind is str:
        return value
    if kind is int:
        if abs(value) < MAX_INT:
            return value
        return other(value, "the integer is too large to cross (limit 2**63)")
    if kind is float:
        return value if math.isfinite(value) else other(value, f"{value!r} is not a finite number")
    if depth >= MAX_DEPTH:
        return other(value, f"nested more than {MAX_DEPTH} levels deep")
    if kind is list or kind is tuple:
        items = [_copy(v, depth + 1, other, coerce=coerce, keep_tuples=keep_tuples) for v in value]
        return tuple(items) if keep_tuples and kind is tuple else items
    if kind is dict:
        bad = next((k for k in value if type(k) is not str
                    and not (coerce and isinstance(k, str))), _NONE)
        if bad is not _NONE:
            return other(value, f"dict keys must be str, not {type(bad).__name__}")
        return {str.__str__(k): _copy(v, depth + 1, other, coerce=coerce, keep_tuples=keep_tuples)
                for k, v in value.items()}
    return other(value, f"a {kind.__name__} cannot cross into the sandbox; pass {PLAIN}")


_NONE = object()
_EXACT = frozenset({type(None), bool, int, float, str, list, tuple, dict})
#: Base type and conversion for subclasses, most specific first (bool before int).
_BASES: tuple[tuple[type, Callable[[Any], Any]], ...] = (
    (bool, bool), (int, int.__index__), (float, float.__float__), (str, str.__str__),
    (tuple, tuple), (list, list), (dict, dict))


def _as_base(value: Any, kind: type) -> tuple[Any, type]:
    for base, convert in _BASES:
        if isinstance(value, base):
            return convert(value), base
    return value, kind


def _bounded_repr(value: Any, _why: str) -> str:
    return safe_repr(value)


def _refuse(value: Any, why: str) -> Any:
    raise NotPlain(why)
