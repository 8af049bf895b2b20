"""Vetted, read-only stand-ins for the few modules sandboxed code may import.

A real module object is a door to everything (``json.decoder.sys.modules`` ...), so user code
never gets one. ``import math`` returns a :class:`ModuleProxy` holding only the functions,
classes and constants listed here by name; nothing is copied by walking the module's
``__dict__``. Entries that could build huge values in one C call (``math.factorial``,
``random.getrandbits``) are wrapped with the same size cap as ``*`` and ``**``; entries that
would change process-wide state (``decimal.getcontext``, the shared ``random`` generator,
``string.Formatter``, ``functools.update_wrapper``) are left out.
"""

from __future__ import annotations
import __future__

import builtins
import collections
import datetime
import decimal
import dis
import functools
import itertools
import json
import math
import random
import re
import statistics
import string
import sys
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

from agenticraft.jail.restricted.guards import (
    MAX_GCD_BITS,
    check_int_bits,
    check_size,
    current_context,
    dead_run_violation,
    exact,
    guarded_mul,
    is_sandbox_class,
    violation,
)
from agenticraft.jail.restricted.standins import (
    SandboxDecimal,
    SandboxFraction,
    nesting_checked,
)


class ModuleProxy:
    """A read-only namespace that looks like a module to user code.

    Members live in the instance ``__dict__`` so attribute reads are as fast as on a module.
    There is deliberately no ``__name__``: ``from json import decoder`` falls back to
    ``sys.modules[module.__name__ + '.decoder']`` when the attribute is missing, and that
    fallback must find nothing.
    """

    def __init__(self, name: str, members: Mapping[str, Any]) -> None:
        namespace = object.__getattribute__(self, "__dict__")
        namespace.update(members)
        namespace["_proxy_name"] = name

    def __getattr__(self, name: str) -> Any:
        # Only called for missing names (including __name__, see the class docstring).
        module = object.__getattribute__(self, "__dict__").get("_proxy_name", "?")
        raise AttributeError(f"module {module!r} has no attribute {name!r} in the sandbox")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("sandbox modules are read-only")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("sandbox modules are read-only")

    def __repr__(self) -> str:
        module = object.__getattribute__(self, "__dict__").get("_proxy_name", "?")
        return f"<sandbox module {module!r}>"


def _pick(module: Any, names: Iterable[str]) -> dict[str, Any]:
    """Members named explicitly; names missing on this Python version are skipped."""
    return {name: getattr(module, name) for name in names if hasattr(module, name)}


# --------------------------------------------------------------------------------------------
# math, with the big-integer builders size-capped
# --------------------------------------------------------------------------------------------

_MATH_NAMES = (
    "acos", "acosh", "asin", "asinh", "atan", "atan2", "atanh", "cbrt", "ceil", "comb",
    "copysign", "cos", "cosh", "degrees", "dist", "e", "erf", "erfc", "exp", "exp2", "expm1",
    "fabs", "factorial", "floor", "fmod", "frexp", "fsum", "gamma", "gcd", "hypot", "inf",
    "isclose", "isfinite", "isinf", "isnan", "isqrt", "lcm", "ldexp", "lgamma", "log",
    "log10", "log1p", "log2", "modf", "nan", "nextafter", "perm", "pi", "pow", "prod",
    "radians", "remainder", "sin", "sinh", "sqrt", "tan", "tanh", "tau", "trunc", "ulp",
)


def _int_arg(value: Any) -> int:
    if not isinstance(value, int):
        raise TypeError(f"'{type(value).__name__}' object cannot be interpreted as an integer")
    return int.__index__(value)


def _factorial(n: Any, /) -> int:
    """math.factorial, refused before computing when the result exceeds the value cap."""
    count = _int_arg(n)
    if count > 20:
        check_size("math.factorial()", count * count.bit_length() // 8)
        check_int_bits("math.factorial()", count * count.bit_length())
    return math.factorial(count)


def _comb(n: Any, k: Any, /) -> int:
    """math.comb, size-capped (C(n, k) has at most min(k, n-k) * log2(n) bits)."""
    total, chosen = _int_arg(n), _int_arg(k)
    if total > 64 and 0 <= chosen <= total:
        check_size("math.comb()", min(chosen, total - chosen) * total.bit_length() // 8)
        check_int_bits("math.comb()", min(chosen, total - chosen) * total.bit_length())
    return math.comb(total, chosen)


def _perm(n: Any, k: Any = None, /) -> int:
    """math.perm, size-capped (k * log2(n) bits)."""
    total = _int_arg(n)
    chosen = total if k is None else _int_arg(k)
    if total > 64 and 0 <= chosen <= total:
        check_size("math.perm()", chosen * total.bit_length() // 8)
        check_int_bits("math.perm()", chosen * total.bit_length())
    return math.perm(total, chosen)


def _prod(iterable: Iterable[Any], /, *, start: Any = 1) -> Any:
    """math.prod through the size-capped ``*``."""
    result = start
    for item in iterable:
        result = guarded_mul(result, item)
    return result


def _lcm(*integers: Any) -> int:
    """math.lcm, size-capped (the result has at most the sum of the operands' bits)."""
    values = [_int_arg(value) for value in integers]
    bits = sum(int.bit_length(value) for value in values)
    if bits > 64 * 8:
        check_size("math.lcm()", bits // 8 + 1)
        check_int_bits("math.lcm()", bits, MAX_GCD_BITS)
    return math.lcm(*values)


def _gcd(*integers: Any) -> int:
    """math.gcd (quadratic in the operands' size): operands bounded like math.lcm."""
    values = [_int_arg(value) for value in integers]
    check_int_bits("math.gcd()", max((int.bit_length(v) for v in values), default=0),
                   MAX_GCD_BITS)
    return math.gcd(*values)


def _integral(function: Callable[[Any], Any], name: str) -> Callable[[Any], Any]:
    """math.floor/ceil/trunc: Decimal and Fraction operands are already bounded by their
    stand-ins; this keeps user classes' __floor__ ... out of it too (they would run host-side
    conversion of arbitrary size)."""

    def integral(x: Any, /) -> Any:
        if isinstance(x, decimal.Decimal):
            SandboxDecimal.check_value(x)
        return function(x)

    integral.__name__ = integral.__qualname__ = name
    return integral


_MATH = {**_pick(math, _MATH_NAMES), "factorial": _factorial, "comb": _comb, "perm": _perm,
         "prod": _prod, "lcm": _lcm, "gcd": _gcd, "floor": _integral(math.floor, "floor"),
         "ceil": _integral(math.ceil, "ceil"), "trunc": _integral(math.trunc, "trunc")}


# --------------------------------------------------------------------------------------------
# random: a private generator (seeding it never changes the host's `random` module)
# --------------------------------------------------------------------------------------------


class SandboxRandom(random.Random):
    """``random.Random`` whose bulk generators respect the value size cap."""

    def getrandbits(self, k: int, /) -> int:
        check_size("random.getrandbits()", _int_arg(k) // 8)
        return super().getrandbits(k)

    def randbytes(self, n: int, /) -> bytes:
        check_size("random.randbytes()", _int_arg(n))
        return super().randbytes(n)

    def choices(self, population: Any, weights: Any = None, *, cum_weights: Any = None,
                k: int = 1) -> list[Any]:
        check_size("random.choices()", _int_arg(k) * 8)
        return super().choices(population, weights, cum_weights=cum_weights, k=k)

    def sample(self, population: Any, k: int, *, counts: Any = None) -> list[Any]:
        check_size("random.sample()", _int_arg(k) * 8)
        return super().sample(population, k, counts=counts)


_RANDOM_FUNCTIONS = (
    "betavariate", "choice", "choices", "expovariate", "gammavariate", "gauss", "getrandbits",
    "getstate", "lognormvariate", "normalvariate", "paretovariate", "randbytes", "randint",
    "random", "randrange", "sample", "seed", "setstate", "shuffle", "triangular", "uniform",
    "vonmisesvariate", "weibullvariate",
)


def make_random_proxy() -> ModuleProxy:
    """A ``random`` module backed by a fresh generator (one per run)."""
    generator = SandboxRandom()
    members = {name: getattr(generator, name) for name in _RANDOM_FUNCTIONS}
    members["Random"] = SandboxRandom
    return ModuleProxy("random", members)


# --------------------------------------------------------------------------------------------
# functools without the attribute-copying helpers
# --------------------------------------------------------------------------------------------


def _total_ordering(cls: type) -> type:
    """functools.total_ordering for classes defined in the sandbox (it sets attributes)."""
    if not is_sandbox_class(cls):
        raise violation("functools.total_ordering() only works on classes defined in the "
                        "sandbox", construct="functools.total_ordering")
    return functools.total_ordering(cls)


# update_wrapper/wraps take attribute *names* and copy them with the real getattr/setattr,
# which would bypass the attribute guard: they are not offered.
_FUNCTOOLS = {**_pick(functools, ("reduce", "partial", "lru_cache", "cache", "cmp_to_key",
                                  "cached_property")),
              "total_ordering": _total_ordering}


# --------------------------------------------------------------------------------------------
# re: exact built-in arguments (they become keys of re's process-wide caches), no DEBUG
# --------------------------------------------------------------------------------------------

_RE_DEBUG = int(re.DEBUG)


def _flags(flags: Any) -> Any:
    """Exact int flags without re.DEBUG (which prints the parse tree to the real stdout)."""
    if isinstance(flags, int):
        return int.__index__(flags) & ~_RE_DEBUG
    return flags  # re raises its own TypeError


def _pattern(pattern: Any) -> Any:
    return pattern if type(pattern) is re.Pattern else exact(pattern)


def _re_compile(pattern: Any, flags: Any = 0) -> re.Pattern[Any]:
    return re.compile(_pattern(pattern), _flags(flags))


def _re_search(pattern: Any, string: Any, flags: Any = 0) -> Any:
    return re.search(_pattern(pattern), string, _flags(flags))


def _re_match(pattern: Any, string: Any, flags: Any = 0) -> Any:
    return re.match(_pattern(pattern), string, _flags(flags))


def _re_fullmatch(pattern: Any, string: Any, flags: Any = 0) -> Any:
    return re.fullmatch(_pattern(pattern), string, _flags(flags))


def _re_split(pattern: Any, string: Any, maxsplit: Any = 0, flags: Any = 0) -> Any:
    return re.split(_pattern(pattern), string, maxsplit=maxsplit, flags=_flags(flags))


def _re_findall(pattern: Any, string: Any, flags: Any = 0) -> Any:
    return re.findall(_pattern(pattern), string, _flags(flags))


def _re_finditer(pattern: Any, string: Any, flags: Any = 0) -> Any:
    return re.finditer(_pattern(pattern), string, _flags(flags))


def _re_sub(pattern: Any, repl: Any, string: Any, count: Any = 0, flags: Any = 0) -> Any:
    return re.sub(_pattern(pattern), exact(repl), string, count=count, flags=_flags(flags))


def _re_subn(pattern: Any, repl: Any, string: Any, count: Any = 0, flags: Any = 0) -> Any:
    return re.subn(_pattern(pattern), exact(repl), string, count=count, flags=_flags(flags))


_RE = {**_pick(re, ("escape", "error", "Pattern", "Match", "A", "ASCII", "I", "IGNORECASE",
                    "M", "MULTILINE", "S", "DOTALL", "U", "UNICODE", "X", "VERBOSE",
                    "NOFLAG")),
       "compile": _re_compile, "search": _re_search, "match": _re_match,
       "fullmatch": _re_fullmatch, "split": _re_split, "findall": _re_findall,
       "finditer": _re_finditer, "sub": _re_sub, "subn": _re_subn}
for _name, _function in list(_RE.items()):
    if callable(_function) and _name in ("compile", "search", "match", "fullmatch", "split",
                                         "findall", "finditer", "sub", "subn"):
        _function.__name__ = _function.__qualname__ = _name


# --------------------------------------------------------------------------------------------
# json: indented output is built piece by piece under the value cap
# --------------------------------------------------------------------------------------------


def _json_dumps(obj: Any, *, indent: Any = None, separators: Any = None, cls: Any = None,
                **kwargs: Any) -> str:
    if indent is None and separators is None:
        return json.dumps(obj, cls=cls, **kwargs)
    encoder = (cls or json.JSONEncoder)(indent=indent, separators=separators, **kwargs)
    cap = current_context().max_value_bytes
    parts: list[str] = []
    total = 0
    for chunk in encoder.iterencode(obj):
        total += len(chunk)
        if total * 4 > cap:
            check_size("json.dumps()", total * 4)
        parts.append(chunk)
    return "".join(parts)


# --------------------------------------------------------------------------------------------
# The allow-list
# --------------------------------------------------------------------------------------------

_MEMBERS: dict[str, dict[str, Any]] = {
    "math": _MATH,
    "statistics": _pick(statistics, (
        "mean", "fmean", "geometric_mean", "harmonic_mean", "median", "median_low",
        "median_high", "median_grouped", "mode", "multimode", "pstdev", "pvariance", "stdev",
        "variance", "quantiles", "correlation", "covariance", "linear_regression",
        "NormalDist", "StatisticsError")),
    # dump/load take file objects; the sandbox has no files.
    "json": {**_pick(json, ("loads", "JSONDecodeError", "JSONEncoder", "JSONDecoder")),
             "dumps": _json_dumps},
    # purge() would clear the host's regex cache; DEBUG prints to the real stdout.
    "re": _RE,
    "datetime": _pick(datetime, ("date", "time", "datetime", "timedelta", "timezone", "tzinfo",
                                 "MINYEAR", "MAXYEAR", "UTC")),
    # Iterators built on other iterators: nesting depth bounded (next() recursed in C).
    "itertools": {**_pick(itertools, ("combinations", "combinations_with_replacement", "count",
                                      "permutations", "product", "repeat")),
                  **{name: nesting_checked(getattr(itertools, name)) for name in (
                      "accumulate", "chain", "compress", "cycle", "dropwhile", "filterfalse",
                      "groupby", "islice", "pairwise", "starmap", "takewhile", "tee",
                      "zip_longest", "batched") if hasattr(itertools, name)}},
    "functools": _FUNCTOOLS,
    "collections": _pick(collections, ("Counter", "OrderedDict", "defaultdict", "deque",
                                       "namedtuple", "ChainMap")),
    "random": {},  # built per run by make_random_proxy()
    # Contexts (getcontext/setcontext/localcontext/Context/DefaultContext) are thread-wide
    # state of the host and allow unbounded precision; only values and errors are offered.
    "decimal": {"Decimal": SandboxDecimal, **_pick(decimal, (
        "DecimalException", "InvalidOperation", "DivisionByZero", "Overflow",
        "Underflow", "Inexact", "Rounded", "Subnormal", "Clamped", "FloatOperation",
        "ROUND_CEILING", "ROUND_DOWN", "ROUND_FLOOR", "ROUND_HALF_DOWN", "ROUND_HALF_EVEN",
        "ROUND_HALF_UP", "ROUND_UP", "ROUND_05UP"))},
    "fractions": {"Fraction": SandboxFraction},
    # No Formatter: Formatter().format('{0.__class__}', x) walks attributes.
    "string": _pick(string, (
        "ascii_letters", "ascii_lowercase", "ascii_uppercase", "digits", "hexdigits",
        "octdigits", "punctuation", "printable", "whitespace", "capwords", "Template")),
}

_SHARED_PROXIES: dict[str, ModuleProxy] = {
    name: (make_random_proxy() if name == "random" else ModuleProxy(name, members))
    for name, members in _MEMBERS.items()
}

#: Module name -> vetted read-only proxy. ``allowed_imports & SAFE_MODULES.keys()`` is what a
#: run may import. (``random`` gets a fresh generator per run; the proxy here has its own.)
SAFE_MODULES: Mapping[str, ModuleProxy] = MappingProxyType(_SHARED_PROXIES)

# `from __future__ import annotations` compiles to a real import of __future__.
_FUTURE = ModuleProxy("__future__", _pick(__future__, __future__.all_feature_names))

_PER_RUN_BUILDERS: dict[str, Callable[[], ModuleProxy]] = {"random": make_random_proxy}


_IMPORT_NAME = dis.opmap["IMPORT_NAME"]


def guarded_import(name: Any, globals: Any = None, locals: Any = None,
                   fromlist: Any = (), level: Any = 0) -> ModuleProxy | None:
    """``__import__`` for sandboxed code: vetted proxies of allowed modules, nothing else.

    C functions also call the *current frame's* ``__import__`` (``PyImport_Import``: e.g.
    ``datetime.strftime`` imports ``time``). Those calls do not come from an ``IMPORT_NAME``
    instruction of the sandboxed frame; they are served with the host's import and get ``None``
    back (``PyImport_Import`` ignores the result and reads ``sys.modules`` itself), so no module
    object ever reaches user code.
    """
    caller = sys._getframe(1)
    if caller.f_code.co_code[caller.f_lasti] != _IMPORT_NAME:
        builtins.__import__(name, None, None, fromlist, 0)
        return None
    if type(name) is not str or level != 0:
        raise violation("relative imports are not allowed in the sandbox", construct="import")
    if name == "__future__":
        return _FUTURE
    context = current_context()
    if globals is not context.namespace:
        raise dead_run_violation(f"import of module {name!r}")
    if name not in context.allowed_imports or name not in _SHARED_PROXIES:
        allowed = ", ".join(sorted(context.allowed_imports)) or "none"
        raise violation(f"import of module {name!r} is not allowed (allowed here: {allowed})",
                        construct="import")
    proxy = context.modules.get(name)
    if proxy is None:
        builder = _PER_RUN_BUILDERS.get(name)
        proxy = builder() if builder is not None else _SHARED_PROXIES[name]
        context.modules[name] = proxy
    return proxy


__all__ = ["SAFE_MODULES", "ModuleProxy", "SandboxRandom",
           "guarded_import", "make_random_proxy"]
