"""Stand-ins for a few built-in classes whose constructors could build huge values, and the
nesting bound for iterators built on other iterators.

A stand-in (``bytes``, ``fractions.Fraction``, ``decimal.Decimal`` as the sandbox sees them)
is a subclass of the real class whose metaclass checks the constructor's arguments and then
returns an instance of the *real* class; ``isinstance``/``issubclass`` answer for the real
class, and sandbox classes may derive from a stand-in as from the real class. User code cannot
tell the difference (it has no ``type()`` and no ``__class__``).

Iterators built on iterators (``map``, ``filter``, ``zip``, ``enumerate``, most of
``itertools``) call ``next()`` of their source in C, without any recursion check: a chain of
a million ``map`` objects crashes the C stack. :func:`nesting_checked` keeps a chain's depth:
a first level stays the native object; deeper levels are wrapped in :class:`_Nested`, whose
``__next__`` is a Python frame (so the recursion limit counts it), and chains deeper than
:data:`MAX_NESTING` are refused when they are built.
"""

from __future__ import annotations

import abc
import decimal
import functools
import itertools
import operator
import re
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from agenticraft.jail.restricted.guards import check_size, user_lineno
from agenticraft.wire.errors import ResourceLimitExceeded

#: Most decimal digits an exact Decimal/Fraction conversion may involve. Converting a Decimal
#: with N digits to int is quadratic in N (20,000 digits: ~10 ms; 400,000: ~3.5 s).
MAX_DIGITS = 20_000

#: Deepest chain of iterators built on iterators.
MAX_NESTING = 1_000

#: The decimal context of every run: exponents bounded like :data:`MAX_DIGITS`.
DECIMAL_CONTEXT = decimal.Context(
    prec=28, rounding=decimal.ROUND_HALF_EVEN, Emax=MAX_DIGITS, Emin=-MAX_DIGITS,
    capitals=1, clamp=0,
    traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow])


def refuse_digits(what: str, digits: int) -> ResourceLimitExceeded:
    lineno = user_lineno()
    where = f" at line {lineno}" if lineno else ""
    return ResourceLimitExceeded(
        "memory_mb", None, None,
        f"Resource limit exceeded: {what}{where} would work with a number of about {digits} "
        f"decimal digits (at most {MAX_DIGITS} are allowed in the sandbox). It was refused "
        "before any work was done.")


_CHECKS: dict[type, Callable[..., None]] = {}
#: Stand-ins whose construction is delegated whole (the nesting-checked iterator builders).
_FACTORIES: dict[type, Callable[..., Any]] = {}


class _StandInMeta(type):
    """Metaclass of the stand-ins (and of sandbox classes derived from one)."""

    def __instancecheck__(cls, obj: Any) -> bool:
        real = cls.__dict__.get("_sandbox_real")
        if real is not None:
            if type(obj) is _Nested:  # a deep map/zip/... chain is still a map/zip/...
                obj = obj._inner
            return isinstance(obj, real)
        return super().__instancecheck__(obj)

    def __subclasscheck__(cls, sub: Any) -> bool:
        real = cls.__dict__.get("_sandbox_real")
        if real is not None:
            # Nominal, not issubclass(sub, real): for an ABC such as Fraction, ABCMeta walks
            # real's subclasses, which include this stand-in, and would recurse forever.
            return isinstance(sub, type) and real in sub.__mro__
        return super().__subclasscheck__(sub)

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        factory = _FACTORIES.get(cls)
        if factory is not None:
            return factory(*args, **kwargs)
        check = _CHECKS.get(cls)
        if check is None:  # a sandbox class derived from a stand-in
            return super().__call__(*args, **kwargs)
        check(*args, **kwargs)
        return cls.__dict__["_sandbox_real"](*args, **kwargs)


class _StandInABCMeta(_StandInMeta, abc.ABCMeta):
    """For stand-ins of ABC-based classes (``Fraction`` is a ``numbers.Rational``)."""


def _stand_in(real: type, check: Callable[..., None]) -> Any:
    meta = _StandInABCMeta if isinstance(real, abc.ABCMeta) else _StandInMeta
    cls = meta(real.__name__, (real,), {
        "_sandbox_real": real, "__module__": real.__module__, "__qualname__": real.__qualname__,
        "__doc__": real.__doc__, "__slots__": ()})
    _CHECKS[cls] = check
    return cls


# -- bytes(n) ------------------------------------------------------------------------------------

def _check_bytes(source: Any = b"", *args: Any, **kwargs: Any) -> None:
    if isinstance(source, int) and not isinstance(source, bool):
        check_size("bytes()", operator.index(source))


SandboxBytes = _stand_in(bytes, _check_bytes)


# -- Decimal ---------------------------------------------------------------------------------

_EXPONENT = re.compile(r"[eE]\s*([-+]?\d+)")


def _check_decimal_value(value: decimal.Decimal) -> None:
    if value.is_finite() and value and abs(value.adjusted()) > MAX_DIGITS:
        raise refuse_digits("this Decimal", abs(value.adjusted()))


def _check_decimal(value: Any = "0", context: Any = None) -> None:
    if isinstance(value, str):
        if len(value) > MAX_DIGITS:
            raise refuse_digits("Decimal()", len(value))
        match = _EXPONENT.search(value)
        if match is not None and len(match.group(1)) > 12:
            raise refuse_digits("Decimal()", 10 ** 12)
        if match is not None and abs(int(match.group(1))) > MAX_DIGITS:
            raise refuse_digits("Decimal()", abs(int(match.group(1))))
    elif isinstance(value, int) and not isinstance(value, bool):
        if int.bit_length(value) > MAX_DIGITS * 3.33:
            raise refuse_digits("Decimal()", int(int.bit_length(value) / 3.33))
    elif isinstance(value, decimal.Decimal):
        _check_decimal_value(value)
    elif isinstance(value, tuple | list) and len(value) == 3:
        _sign, digits, exponent = value
        if isinstance(exponent, int) and abs(exponent) > MAX_DIGITS:
            raise refuse_digits("Decimal()", abs(exponent))
        if len(digits) > MAX_DIGITS:
            raise refuse_digits("Decimal()", len(digits))


SandboxDecimal = _stand_in(decimal.Decimal, _check_decimal)
SandboxDecimal.check_value = staticmethod(_check_decimal_value)  # type: ignore[attr-defined]


# -- Fraction --------------------------------------------------------------------------------

def _check_fraction(numerator: Any = 0, denominator: Any = None, **kwargs: Any) -> None:
    for value in (numerator, denominator):
        if isinstance(value, str):
            match = _EXPONENT.search(value)
            if match is not None and (len(match.group(1)) > 12
                                      or abs(int(match.group(1))) > MAX_DIGITS):
                raise refuse_digits("Fraction()", abs(int(match.group(1)[:12])))
        elif isinstance(value, decimal.Decimal):
            _check_decimal_value(value)


SandboxFraction = _stand_in(Fraction, _check_fraction)


def check_round(number: Any, ndigits: Any) -> None:
    """``round(int, -N)``/``round(Fraction, N)`` compute ``10 ** N`` first."""
    if ndigits is None or not isinstance(ndigits, int) or isinstance(number, float):
        return
    digits = abs(operator.index(ndigits))
    if digits <= 4096:
        return
    if isinstance(number, int):
        if ndigits < 0:
            check_size("round()", digits * 10 // 24 + 1)
    elif isinstance(number, Fraction):
        check_size("round()", digits * 10 // 24 + 1)
    elif isinstance(number, decimal.Decimal) and digits > MAX_DIGITS:
        raise refuse_digits("round()", digits)


# -- iterators built on iterators -------------------------------------------------------------

class _Nested:
    """An iterator of depth > 1: ``__next__`` is a Python frame (counted by the recursion
    limit), so ``next()`` through a deep chain raises RecursionError instead of crashing."""

    __slots__ = ("_depth", "_inner")

    def __init__(self, inner: Any, depth: int) -> None:
        self._inner = inner
        self._depth = depth

    def __iter__(self) -> _Nested:
        return self

    def __next__(self) -> Any:
        return next(self._inner)

    def __repr__(self) -> str:
        return repr(self._inner)


_LAZY_TYPES: frozenset[type] = frozenset({map, filter, zip, enumerate, reversed} | {
    value for value in vars(itertools).values() if isinstance(value, type)})


def _depth(value: Any) -> int:
    tv = type(value)
    if tv is _Nested:
        return value._depth
    return 1 if tv in _LAZY_TYPES else 0


def nesting_checked(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` (map, zip, itertools.islice ...) with the depth of the chain it builds
    kept and bounded."""

    @functools.wraps(function)
    def checked(*args: Any, **kwargs: Any) -> Any:
        depth = 0
        for arg in args:
            d = _depth(arg)
            if d > depth:
                depth = d
        for arg in kwargs.values():
            depth = max(depth, _depth(arg))
        result = function(*args, **kwargs)
        if depth == 0:
            return result
        if depth >= MAX_NESTING:
            raise ResourceLimitExceeded(
                "recursion", depth, MAX_NESTING,
                f"Resource limit exceeded: recursion: a chain of more than {MAX_NESTING} "
                "iterators built on iterators (map, filter, zip, itertools ...) is not allowed "
                "in the sandbox.")
        if type(result) is tuple:  # itertools.tee
            return tuple(_Nested(item, depth + 1) for item in result)
        return _Nested(result, depth + 1)

    for name in ("from_iterable",):  # itertools.chain.from_iterable
        inner = getattr(function, name, None)
        if inner is not None:
            setattr(checked, name, nesting_checked(inner))
    return checked


def nesting_checked_class(real: type) -> Any:
    """A stand-in for ``map``/``filter``/``zip``/``enumerate``: builds through
    :func:`nesting_checked`, and ``isinstance(x, map)`` still answers for the real class."""
    cls = _stand_in(real, lambda *args, **kwargs: None)
    _FACTORIES[cls] = nesting_checked(real)
    return cls


# -- tuples nested too deep to hash ------------------------------------------------------------

#: Depth of deep tuples built in this run, by id; the tuple is kept with its depth so a reused id
#: is never trusted. Only a cache (a miss walks the tuple): shallow tuples are not kept, the
#: size is bounded, and it is emptied at each run's end.
_TUPLE_DEPTHS: dict[int, tuple[tuple[Any, ...], int]] = {}
_CACHE_FROM_DEPTH = 8
_CACHE_MAX = 65_536


def _tuple_depth(value: tuple[Any, ...]) -> int:
    known = _TUPLE_DEPTHS.get(id(value))
    if known is not None and known[0] is value:
        return known[1]
    depth, stack = 1, [(value, 1)]
    while stack:
        item, level = stack.pop()
        depth = max(depth, level)
        if depth > MAX_NESTING:
            break
        for child in item:
            if type(child) is tuple and child:
                cached = _TUPLE_DEPTHS.get(id(child))
                if cached is not None and cached[0] is child:
                    depth = max(depth, level + cached[1])
                else:
                    stack.append((child, level + 1))
    return depth


def guarded_tuple(*items: Any) -> tuple[Any, ...]:
    """``_tuple_`` (a tuple display with non-constant items), and the check behind ``*args``
    and ``tuple()``. Hashing a tuple recurses in C without a recursion check, so a tuple
    nested deeper than :data:`MAX_NESTING` (built one level per step in a loop) would crash
    the C stack in a set or as a dict key: it is refused when it is built."""
    return checked_tuple(items)


def checked_tuple(items: tuple[Any, ...]) -> tuple[Any, ...]:
    depth = 0
    for item in items:
        if type(item) is tuple and item:
            depth = max(depth, _tuple_depth(item))
    if depth == 0:
        return items
    if depth >= MAX_NESTING:
        raise ResourceLimitExceeded(
            "recursion", depth + 1, MAX_NESTING,
            f"Resource limit exceeded: recursion: tuples nested more than {MAX_NESTING} deep "
            "are not allowed in the sandbox (hashing them would crash the interpreter).")
    if depth + 1 >= _CACHE_FROM_DEPTH:
        if len(_TUPLE_DEPTHS) >= _CACHE_MAX:
            _TUPLE_DEPTHS.clear()
        _TUPLE_DEPTHS[id(items)] = (items, depth + 1)
    return items


def checked_varargs(args: tuple[Any, ...]) -> bool:
    """``_vararg_``: ``def f(*a): return a`` nests its argument one level per call."""
    checked_tuple(args)
    return True


def forget_tuples() -> None:
    """At a run's end: the cache must not keep the run's tuples alive."""
    _TUPLE_DEPTHS.clear()


def _build_tuple(iterable: Any = ()) -> tuple[Any, ...]:
    return checked_tuple(tuple(iterable))


#: ``tuple`` as the sandbox sees it: ``tuple([t])`` nests like a display does.
SandboxTuple = _stand_in(tuple, lambda *args, **kwargs: None)
_FACTORIES[SandboxTuple] = _build_tuple


# -- hash() of deeply nested tuples -------------------------------------------------------------

def check_tuple_depth(value: Any) -> None:
    """``hash()`` of a tuple recurses in C without a recursion check."""
    stack = [(value, 1)]
    seen = 0
    while stack:
        item, depth = stack.pop()
        if depth > MAX_NESTING:
            raise ResourceLimitExceeded(
                "recursion", depth, MAX_NESTING,
                f"Resource limit exceeded: recursion: tuples nested more than {MAX_NESTING} "
                "deep cannot be hashed in the sandbox.")
        for child in item:
            if type(child) is tuple:
                seen += 1
                stack.append((child, depth + 1))
        if seen > 1_000_000:
            return
