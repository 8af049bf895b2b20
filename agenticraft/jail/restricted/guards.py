"""Runtime hooks called by code compiled with :mod:`.compiler`.

RestrictedPython rewrites attribute access, item writes, iteration, ``print`` and class creation
into calls of hook functions (``_getattr_``, ``_write_``, ``_print_`` ...). This module provides
those hooks, plus the size-capped arithmetic helpers (``_mul_``, ``_pow_``, ``_lshift_``) that our
compiler adds, because one line such as ``10**10**10`` would otherwise freeze the process.

Design rules, because the hooks sit on the hot path of every sandboxed program:

* the common case is one or two type checks and then the native operation;
* nothing here keeps per-run state in globals: size caps come from a :class:`SandboxContext`
  held in a :class:`contextvars.ContextVar` (threads and async tasks each see their own run);
* every denial raises a :class:`SecurityViolation` (or ``ResourceLimitExceeded``) whose message
  only contains strings, never host objects, so exception arguments cannot leak anything.
"""

from __future__ import annotations

import _string  # the C parser behind str.format; used to vet format strings
import abc
import contextvars
import datetime
import functools
import operator
import re
import string
import sys
import types
from collections import ChainMap, Counter, OrderedDict, defaultdict, deque
from collections.abc import Callable
from fractions import Fraction
from typing import Any, NoReturn

from RestrictedPython.Guards import guarded_iter_unpack_sequence, guarded_unpack_sequence

from agenticraft.wire.errors import ResourceLimitExceeded, SecurityViolation

# --------------------------------------------------------------------------------------------
# Marks: which classes, functions and frames belong to the sandbox
# --------------------------------------------------------------------------------------------

#: Key put into the namespace of every class created by sandboxed code. User code can never
#: read or write it: it starts with ``_``.
SANDBOX_MARK = "__agenticraft_sandbox__"


class _Token:
    """Unforgeable value stored under :data:`SANDBOX_MARK` (user code cannot reach it)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<sandbox mark>"


SANDBOX_TOKEN = _Token()

#: The ``__builtins__`` dict of every sandboxed run (filled by the executor: curated built-ins
#: plus the hooks). Frames and functions of sandboxed code are recognised by *identity* of
#: their builtins, which needs no extra key in the user's globals (a bigger globals dict makes
#: every module-level variable access slower).
SANDBOX_BUILTINS: dict[str, Any] = {}

MIB = 1024 * 1024


def is_sandbox_class(cls: Any) -> bool:
    """True for classes whose ``class`` statement ran inside the sandbox."""
    return isinstance(cls, type) and getattr(cls, SANDBOX_MARK, None) is SANDBOX_TOKEN


def is_sandbox_function(func: Any) -> bool:
    """True for plain functions defined by sandboxed code."""
    return type(func) is types.FunctionType and func.__builtins__ is SANDBOX_BUILTINS


def is_sandbox_frame(frame: types.FrameType) -> bool:
    """True when ``frame`` runs code compiled for the sandbox (used to clean tracebacks)."""
    return frame.f_builtins is SANDBOX_BUILTINS


def user_lineno() -> int | None:
    """Line of the innermost sandboxed frame on the stack (for runtime violation messages)."""
    frame: types.FrameType | None = sys._getframe(1)
    while frame is not None:
        if is_sandbox_frame(frame):
            return frame.f_lineno
        frame = frame.f_back
    return None


def violation_text(lineno: int | None, message: str) -> str:
    """``Security violation at line N: message.`` (one format for compile and run time)."""
    where = f" at line {lineno}" if lineno else ""
    message = message.rstrip(".")
    return f"Security violation{where}: {message}."


def violation(message: str, construct: str | None = None) -> SecurityViolation:
    """A :class:`SecurityViolation` located at the current line of user code."""
    lineno = user_lineno()
    return SecurityViolation(violation_text(lineno, message), lineno=lineno, construct=construct)


# --------------------------------------------------------------------------------------------
# Per-run context (size caps, allowed imports)
# --------------------------------------------------------------------------------------------


class SandboxContext:
    """What the hooks need to know about the current run; one instance per ``run_restricted``."""

    __slots__ = ("allowed_imports", "max_value_bytes", "memory_mb", "modules", "namespace",
                 "printer")

    def __init__(self, memory_mb: int, allowed_imports: frozenset[str] = frozenset(),
                 printer: OutputLimiter | None = None,
                 namespace: dict[str, Any] | None = None) -> None:
        self.memory_mb = memory_mb
        # One value may use at most half of the memory limit: the operation that builds it
        # usually needs its operands (and a temporary copy) at the same time.
        self.max_value_bytes = max(memory_mb * MIB // 2, 1)
        self.allowed_imports = allowed_imports
        self.modules: dict[str, Any] = {}
        self.printer = printer
        #: The globals of this run's code: an import is only served to frames whose globals
        #: are these (code of a finished run, still referenced somewhere, gets nothing).
        self.namespace = namespace


_DEFAULT_CONTEXT = SandboxContext(512)
_CONTEXT: contextvars.ContextVar[SandboxContext] = contextvars.ContextVar(
    "agenticraft_restricted_context", default=_DEFAULT_CONTEXT)


def current_context() -> SandboxContext:
    """The context of the run executing now (a conservative default outside any run)."""
    return _CONTEXT.get()


def activate(context: SandboxContext) -> contextvars.Token[SandboxContext]:
    """Make ``context`` current; pass the returned token to :func:`deactivate`."""
    return _CONTEXT.set(context)


def deactivate(token: contextvars.Token[SandboxContext]) -> None:
    _CONTEXT.reset(token)


def refuse_size(what: str, nbytes: int) -> NoReturn:
    """Raise ``ResourceLimitExceeded("memory_mb", ...)`` for a value of ``nbytes`` bytes."""
    context = _CONTEXT.get()
    estimated_mb = -(-nbytes // MIB)
    cap_mb = context.max_value_bytes / MIB
    lineno = user_lineno()
    where = f" at line {lineno}" if lineno else ""
    message = (f"Resource limit exceeded: memory_mb (allowed {context.memory_mb} MB): {what}"
               f"{where} would build a value of about {estimated_mb} MB, more than one value "
               f"may use ({cap_mb:g} MB). It was refused before any memory was used. To change "
               "it, raise memory_mb (or %%secure --memory) or compute smaller values.")
    raise ResourceLimitExceeded("memory_mb", estimated_mb, context.memory_mb, message)


def check_size(what: str, nbytes: int) -> None:
    if nbytes > _CONTEXT.get().max_value_bytes:
        refuse_size(what, nbytes)


#: Largest integer a product or power may build (4,194,304 bits, about 1.26 million decimal
#: digits). Below the memory cap on purpose: big-int multiplication is superlinear, so a
#: loop of ``x = x ** 8`` reaches a memory-sized operand only after minutes of CPU.
MAX_INT_BITS = 1 << 22
#: Largest operands of quadratic big-int work: Fraction arithmetic (gcd on every operation)
#: and math.gcd/lcm (131,072 bits, about 39,000 digits).
MAX_GCD_BITS = 1 << 17


def check_int_bits(what: str, bits: int, cap: int = MAX_INT_BITS) -> None:
    """Raise ``ResourceLimitExceeded("memory_mb")`` for an integer result over ``cap`` bits."""
    if bits <= cap:
        return
    lineno = user_lineno()
    where = f" at line {lineno}" if lineno else ""
    raise ResourceLimitExceeded(
        "memory_mb", -(-bits // (8 * MIB)), _CONTEXT.get().memory_mb,
        f"Resource limit exceeded: {what}{where} would work with integers of about {bits:,} "
        f"bits; the sandbox allows {cap:,} bits (about {int(cap / 3.33):,} decimal digits) "
        "there, because the time such arithmetic takes grows faster than the numbers. It was "
        "refused before any work was done.")


def dead_run_violation(what: str) -> SecurityViolation:
    return violation(f"{what} from code of a finished run is not allowed (nothing survives "
                     "from one run into the next)", construct="finished run")


# --------------------------------------------------------------------------------------------
# Size estimates for *, ** and << (pure functions: also used for constant folding)
# --------------------------------------------------------------------------------------------

# Base types whose ``*`` repeats the content, with the bytes per item (0: str, see below).
# The base type's own __len__ is called so that a subclass cannot lie about its length.
_SEQUENCE_KINDS: tuple[tuple[type, int], ...] = (
    (str, 0), (bytes, 1), (bytearray, 1), (list, 8), (tuple, 8), (deque, 8))


def _sequence_bytes(value: Any) -> int | None:
    for base, item_size in _SEQUENCE_KINDS:
        if isinstance(value, base):
            length: int = base.__len__(value)  # type: ignore[attr-defined]
            if item_size == 0:
                item_size = 1 if str.isascii(value) else 4
            return length * item_size
    return None


def _int_bytes(bits: int) -> int:
    return bits // 8 + 1


def estimate_mul_bytes(a: Any, b: Any) -> int:
    """Estimated size of ``a * b`` in bytes; 0 when the result cannot be large."""
    if isinstance(a, int) and isinstance(b, int):
        return _int_bytes(int.bit_length(a) + int.bit_length(b))
    if _is_fraction(a) or _is_fraction(b):
        return _int_bytes(_fraction_bits(a) + _fraction_bits(b))
    if isinstance(b, int):
        size = _sequence_bytes(a)
        if size is not None:
            return size * max(operator.index(b), 0)
    elif isinstance(a, int):
        size = _sequence_bytes(b)
        if size is not None:
            return size * max(operator.index(a), 0)
    return 0


def _is_fraction(value: Any) -> bool:
    # The real MRO, not isinstance: ABC registration must not make something a Fraction.
    return Fraction in type(value).__mro__


def _fraction_bits(value: Any) -> int:
    """Bits of numerator + denominator (of an int: its bits; of anything else: 0)."""
    if isinstance(value, int):
        return int.bit_length(value)
    if _is_fraction(value):
        return (int.bit_length(value._numerator)
                + int.bit_length(value._denominator))
    return 0


def normalize_pow_operand(value: Any) -> Any:
    """Exact ``int``/``Fraction`` for subclasses, so overridden ``numerator`` etc. cannot lie."""
    if isinstance(value, int):
        return operator.index(value)
    if type(value) is not Fraction and _is_fraction(value):
        return Fraction(value._numerator, value._denominator)
    return value


def estimate_pow_bytes(a: Any, b: Any) -> int:
    """Estimated size of ``a ** b`` (operands already normalized); 0 when small or unknown."""
    if type(b) is Fraction and b.denominator == 1:
        b = b.numerator
    if type(b) is not int:
        return 0
    if type(a) is int:
        if b <= 1 or -1 <= a <= 1:
            return 0  # negative exponents give floats, |a| <= 1 stays tiny
        return _int_bytes(a.bit_length() * b)
    if type(a) is Fraction and b not in (-1, 0, 1):
        bits = a.numerator.bit_length() + a.denominator.bit_length()
        return _int_bytes(bits * abs(b))
    return 0


def estimate_lshift_bytes(a: Any, b: Any) -> int:
    """Estimated size of ``a << b``; 0 when small or unknown."""
    if isinstance(a, int) and isinstance(b, int):
        shift = operator.index(b)
        bits = int.bit_length(a)
        if shift > 0 and bits:
            return _int_bytes(bits + shift)
    return 0


# --------------------------------------------------------------------------------------------
# Size-capped arithmetic: _mul_, _pow_, _lshift_ and the in-place variants
# --------------------------------------------------------------------------------------------

# Fast paths: ints within +-(2**30 - 1) are "single digit" for CPython (its int comparisons are
# specialised for them), and products/powers/shifts of such ints below are always small.
# The bounds are written as literals because a global lookup costs as much as the check.


def guarded_mul(a: Any, b: Any) -> Any:
    """``a * b`` unless the result would be larger than the run's value cap."""
    ta = type(a)
    if ta is int:
        tb = type(b)
        if tb is int:
            if -0x3FFFFFFF <= a <= 0x3FFFFFFF and -0x3FFFFFFF <= b <= 0x3FFFFFFF:
                return a * b
        elif tb is float:
            return a * b
    elif ta is float or type(b) is float:
        return a * b  # a float product is never a repeated sequence
    nbytes = estimate_mul_bytes(a, b)
    if nbytes > _CONTEXT.get().max_value_bytes:
        refuse_size("'*'", nbytes)
    if nbytes > 4096:
        if isinstance(a, int) and isinstance(b, int):
            if min(int.bit_length(a), int.bit_length(b)) > 1 << 16:  # else linear time
                check_int_bits("'*'", nbytes * 8)
        elif _is_fraction(a) or _is_fraction(b):
            check_int_bits("'*' of fractions", nbytes * 8, MAX_GCD_BITS)
    return a * b


_FRACTION_PARTNERS = frozenset({int, float, complex, Fraction})


def guarded_pow(a: Any, b: Any) -> Any:
    """``a ** b`` with the result size estimated from exponent x bit length of the base."""
    ta = type(a)
    if ta is int:
        tb = type(b)
        if tb is int:
            if -64 <= b <= 64 and -0x3FFFFFFF <= a <= 0x3FFFFFFF:
                return a ** b
        elif tb is float:
            return a ** b
    elif ta is float or type(b) is float:
        return a ** b
    a = normalize_pow_operand(a)
    b = normalize_pow_operand(b)
    if (type(a) is Fraction and type(b) not in _FRACTION_PARTNERS) or (
            type(b) is Fraction and type(a) not in _FRACTION_PARTNERS):
        # Fraction's ** trusts .numerator/.denominator of anything isinstance() calls Rational.
        raise TypeError(f"unsupported operand type(s) for ** or pow(): "
                        f"'{type(a).__name__}' and '{type(b).__name__}'")
    nbytes = estimate_pow_bytes(a, b)
    if nbytes > _CONTEXT.get().max_value_bytes:
        refuse_size("'**'", nbytes)
    if nbytes > 4096:
        if type(a) is Fraction:
            check_int_bits("'**' of a fraction", nbytes * 8, MAX_GCD_BITS)
        else:
            check_int_bits("'**'", nbytes * 8)
    return a ** b


def guarded_lshift(a: Any, b: Any) -> Any:
    """``a << b`` unless the shifted integer would be larger than the value cap."""
    if type(a) is int and type(b) is int and 0 <= b <= 64 and -0x3FFFFFFF <= a <= 0x3FFFFFFF:
        return a << b
    nbytes = estimate_lshift_bytes(a, b)
    if nbytes > _CONTEXT.get().max_value_bytes:
        refuse_size("'<<'", nbytes)
    return a << b


def guarded_imul(a: Any, b: Any) -> Any:
    """``a *= b`` (in place for lists), size-capped like :func:`guarded_mul`."""
    if type(a) is not list:
        return guarded_mul(a, b)
    check_size("'*='", estimate_mul_bytes(a, b))
    return operator.imul(a, b)


def guarded_ipow(a: Any, b: Any) -> Any:
    return guarded_pow(a, b)


def guarded_ilshift(a: Any, b: Any) -> Any:
    return guarded_lshift(a, b)


def guarded_builtin_pow(base: Any, exp: Any, mod: Any = None) -> Any:
    """The ``pow`` built-in: two-argument form size-capped, modular form computed directly."""
    if mod is None:
        return guarded_pow(base, exp)
    return pow(base, exp, mod)


_INPLACE_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "+=": operator.iadd, "-=": operator.isub, "*=": guarded_imul, "/=": operator.itruediv,
    "//=": operator.ifloordiv, "%=": operator.imod, "**=": guarded_ipow,
    "<<=": guarded_ilshift, ">>=": operator.irshift, "|=": operator.ior,
    "^=": operator.ixor, "&=": operator.iand, "@=": operator.imatmul,
}


def guarded_inplacevar(op: str, target: Any, value: Any) -> Any:
    """``_inplacevar_``: augmented assignment; ``*=``, ``**=`` and ``<<=`` are size-capped."""
    try:
        function = _INPLACE_OPERATORS[op]
    except (KeyError, TypeError):
        raise violation(f"unknown augmented assignment operator {op!r}") from None
    return function(target, value)


def guarded_aug_attr(obj: Any, name: str, op: str, value: Any) -> None:
    """``obj.name op= value`` through the attribute read and write guards."""
    target = guarded_write(obj)
    setattr(target, name, guarded_inplacevar(op, guarded_getattr(target, name), value))


def guarded_aug_item(obj: Any, key: Any, op: str, value: Any) -> None:
    """``obj[key] op= value`` for the size-capped operators."""
    target = guarded_write(obj)
    target[key] = guarded_inplacevar(op, target[key], value)


# --------------------------------------------------------------------------------------------
# Attribute reads: _getattr_
# --------------------------------------------------------------------------------------------

#: Frame, code, generator, coroutine and traceback internals, plus their Python 2 spellings.
#: Denied on every object, at compile time and at run time.
INTERNAL_ATTRIBUTES = frozenset({
    "f_back", "f_builtins", "f_code", "f_generator", "f_globals", "f_lasti", "f_lineno",
    "f_locals", "f_trace", "f_trace_lines", "f_trace_opcodes",
    "co_argcount", "co_cellvars", "co_code", "co_consts", "co_exceptiontable", "co_filename",
    "co_firstlineno", "co_flags", "co_freevars", "co_kwonlyargcount", "co_lines",
    "co_linetable", "co_lnotab", "co_name", "co_names", "co_nlocals", "co_positions",
    "co_posonlyargcount", "co_qualname", "co_stacksize", "co_varnames", "co_branches",
    "gi_code", "gi_frame", "gi_running", "gi_suspended", "gi_yieldfrom",
    "cr_await", "cr_code", "cr_frame", "cr_origin", "cr_running", "cr_suspended",
    "ag_await", "ag_code", "ag_frame", "ag_running", "ag_suspended",
    "tb_frame", "tb_lasti", "tb_lineno", "tb_next",
    "func_closure", "func_code", "func_defaults", "func_dict", "func_doc", "func_globals",
    "func_name", "im_class", "im_func", "im_self", "cell_contents",
})

#: Public-looking names that reveal the class hierarchy (``X.mro()`` reaches BaseException).
CLASS_INTERNAL_ATTRIBUTES = frozenset({"mro"})

#: Dunder attributes that may be *read*; checked at run time (see :func:`_dunder_getattr`).
#: The names are plain strings (or None) on every object; ``__init__`` only via ``super()``.
NAME_DUNDERS = frozenset({"__name__", "__qualname__", "__doc__"})
READABLE_DUNDERS = NAME_DUNDERS | {"__init__"}

# Objects whose only safe attributes are the ones listed (generators, coroutines ...).
_RESUMABLE_TYPES = frozenset({types.GeneratorType, types.CoroutineType,
                              types.AsyncGeneratorType})
_RESUMABLE_ATTRIBUTES = frozenset({"send", "throw", "close", "asend", "athrow", "aclose"})

# Values that must never reach user code, whatever attribute produced them.
_DENIED_VALUE_TYPES = frozenset({
    types.ModuleType, types.FrameType, types.CodeType, types.TracebackType, types.CellType,
    types.MappingProxyType,
})
# Classes that must never reach user code: constructors of the values above, ``type`` itself
# and the BaseException branch that is not an Exception (catching or raising those would let
# sandboxed code swallow KeyboardInterrupt or stop the host with SystemExit).
_DENIED_CLASSES = frozenset({
    type, types.ModuleType, types.FrameType, types.CodeType, types.TracebackType,
    types.CellType, types.FunctionType, types.MethodType, types.MappingProxyType,
    BaseException, SystemExit, KeyboardInterrupt, GeneratorExit, BaseExceptionGroup,
})

#: Methods of built-in types replaced by checked versions (see :data:`_CHECKED_METHODS`):
#: size-capped string builders, and the ones that put their argument into a process-wide
#: cache (``re`` replacement templates, ``_strptime`` formats), which get exact built-ins.
CHECKED_METHOD_NAMES = frozenset({"join", "ljust", "rjust", "center", "zfill", "expandtabs",
                                  "to_bytes", "sub", "subn", "expand", "strptime"})

# Names that take the slow path of guarded_getattr.
_SPECIAL_ATTRIBUTES = (INTERNAL_ATTRIBUTES | CLASS_INTERNAL_ATTRIBUTES | CHECKED_METHOD_NAMES
                       | {"obj", "format", "format_map", "register"})

#: Prefixes of interpreter internals (frame f_*, code co_*, generator gi_* ...). Attribute names
#: written in the source with these prefixes always use the full guard.
INTERNAL_PREFIXES = ("f_", "co_", "gi_", "cr_", "ag_", "tb_", "func_", "im_")


def needs_full_getattr(name: str) -> bool:
    """For the compiler: can ``obj.<name>`` use :func:`guarded_getattr_vetted`?"""
    return (name in _SPECIAL_ATTRIBUTES or name.startswith("_")
            or name.startswith(INTERNAL_PREFIXES))


_ABC_REGISTER = abc.ABCMeta.register

PRIVATE_REASON = "names starting with '_' are private to the sandbox"
INTERNAL_REASON = "frame, code, generator and traceback internals are not available in the sandbox"


def _deny_attribute(name: str, reason: str) -> SecurityViolation:
    return violation(f"access to attribute {name!r} is not allowed ({reason})", construct=name)


def guarded_getattr(obj: Any, name: Any) -> Any:
    """``_getattr_``: the attribute read guard used for every ``obj.name`` in user code."""
    if type(name) is not str:
        raise violation("attribute names must be plain str objects, not "
                        f"{type(name).__name__!r}", construct="getattr")
    if name in _SPECIAL_ATTRIBUTES or name[:1] == "_" or type(obj) in _RESUMABLE_TYPES:
        return _special_getattr(obj, name)
    value = getattr(obj, name)
    tv = type(value)
    if tv in _DENIED_VALUE_TYPES or (tv is type and value in _DENIED_CLASSES):
        raise _denied_value(name, value)
    return value


def guarded_getattr_vetted(obj: Any, name: str) -> Any:
    """``obj.name`` for a name written in the source and vetted by the compiler.

    The compiler only uses this hook for constant names that passed every name check and for
    which :func:`needs_full_getattr` is false, so only the value check is left (it is what
    makes method-heavy code 2x faster than going through :func:`guarded_getattr`).
    """
    value = getattr(obj, name)
    tv = type(value)
    if tv in _DENIED_VALUE_TYPES or (tv is type and value in _DENIED_CLASSES):
        return _unusual_value(obj, name, value)
    return value


def _unusual_value(obj: Any, name: str, value: Any) -> Any:
    """The rare values the fast check flags: refused, except a few known-harmless ones."""
    if type(value) is types.MappingProxyType and type(obj) is re.Pattern:
        return value  # Pattern.groupindex: a read-only view of a plain {name: number} dict
    raise _denied_value(name, value)


def _denied_value(name: str, value: Any) -> SecurityViolation:
    kind = value.__name__ if isinstance(value, type) else type(value).__name__
    return violation(f"attribute {name!r} gives a {kind!r} object, which is not available in "
                     "the sandbox", construct=name)


def _special_getattr(obj: Any, name: str) -> Any:
    if name[:1] == "_" and name != "_":
        if name in READABLE_DUNDERS:
            return _dunder_getattr(obj, name)
        raise _deny_attribute(name, PRIVATE_REASON)
    if name in INTERNAL_ATTRIBUTES:
        raise _deny_attribute(name, INTERNAL_REASON)
    if type(obj) in _RESUMABLE_TYPES and name not in _RESUMABLE_ATTRIBUTES:
        raise _deny_attribute(name, INTERNAL_REASON)
    if name in CLASS_INTERNAL_ATTRIBUTES:
        raise _deny_attribute(name, "class internals are not available in the sandbox")
    if name == "obj" and isinstance(obj, BaseException):
        # AttributeError.obj (3.10+) carries the object whose lookup failed.
        raise _deny_attribute(name, "exceptions do not expose the object they were raised for")
    value = getattr(obj, name)
    if name == "register" and type(value) is types.MethodType and value.__func__ is _ABC_REGISTER:
        # Registering a virtual subclass changes isinstance() for the whole process (e.g. makes
        # any object a numbers.Rational, whose .numerator Fraction.__pow__ then trusts).
        raise _deny_attribute(name, "registering virtual subclasses of ABCs changes the host's "
                                    "isinstance() checks")
    if name in ("format", "format_map"):
        safe = _safe_str_format(value)
        if safe is not None:
            return safe
    elif name in CHECKED_METHOD_NAMES:
        checked = _checked_method(obj, name, value)
        if checked is not None:
            return checked
    tv = type(value)
    if tv in _DENIED_VALUE_TYPES or (tv is type and value in _DENIED_CLASSES):
        return _unusual_value(obj, name, value)
    return value


def _dunder_getattr(obj: Any, name: str) -> Any:
    """Names/docstrings, and ``super().__init__``/``Base.__init__`` for sandbox classes."""
    if name in NAME_DUNDERS:
        value = getattr(obj, name)
        if value is None or type(value) is str:
            return value
        raise _denied_value(name, value)
    if type(obj) is super:
        if is_sandbox_class(obj.__self_class__):
            value = getattr(obj, name)
            if not isinstance(obj.__self__, type):
                return value  # bound to an instance of a sandbox class
            # super(C, C).__init__ is unbound: it could re-initialise any dict or list.
            if is_sandbox_function(value) or value is object.__init__:
                return value
    elif is_sandbox_class(obj):
        value = getattr(obj, name)
        if is_sandbox_function(value) or value is object.__init__:
            return value
    raise _deny_attribute(name, "only super().__init__(...) inside a class defined in the "
                                "sandbox may be used")


# str.format and str.format_map walk attributes of their arguments ('{0.__class__}'), which
# bypasses this guard. They are replaced by versions that refuse attribute fields.

def check_format_string(template: str, depth: int = 0) -> None:
    """Raise SecurityViolation if a format string reads attributes (``{0.attr}``)."""
    for _literal, field, spec, _conversion in _string.formatter_parser(template):
        if field:
            _first, rest = _string.formatter_field_name_split(field)
            for is_attribute, key in rest:
                if is_attribute:
                    raise violation(
                        f"str.format() field {'{' + field + '}'!r} reads attribute {key!r}; "
                        "attribute access inside format strings is not allowed in the sandbox "
                        "(use an f-string or pass the value itself)", construct="str.format")
        if spec and "{" in spec:
            if depth >= 2:
                raise ValueError("Max string recursion exceeded")
            check_format_string(spec, depth + 1)


_SPEC_NUMBERS = re.compile(r"(?:.?[<>=^])?[-+ ]?z?#?0?(\d*)[,_]?(?:\.(\d*))?")


def check_format_spec(spec: str, what: str = "format width") -> None:
    """Refuse a format spec whose width or precision would build a value over the cap."""
    match = _SPEC_NUMBERS.match(spec)
    if match is None:
        return
    width, precision = match.group(1), match.group(2)
    # (int(): the digits are bounded by the int/str conversion limit, 4300 digits)
    largest = max(int(width) if width else 0, int(precision) if precision else 0)
    if largest > 4096:
        check_size(what, largest * 4)


def _needs_checked_formatter(template: str) -> bool:
    """True when a spec is computed at format time (``'{:{w}}'``) or has a width."""
    for _literal, _field, spec, _conversion in _string.formatter_parser(template):
        if spec:
            if "{" in spec:
                return True
            check_format_spec(spec)
    return False


class _CheckedFormatter(string.Formatter):
    """``str.format`` in Python, used only for computed specs: each spec is checked."""

    def format_field(self, value: Any, format_spec: str) -> Any:
        check_format_spec(format_spec)
        return format(value, format_spec)


_FORMATTER = _CheckedFormatter()


def safe_format(template: str, /, *args: Any, **kwargs: Any) -> str:
    """``str.format`` that refuses attribute fields such as ``{0.__class__}`` and widths over
    the value cap."""
    text = str.__str__(template)  # the real characters, whatever a subclass overrides
    check_format_string(text)
    if _needs_checked_formatter(text):
        return _FORMATTER.vformat(text, args, kwargs)
    return str.format(text, *args, **kwargs)


def safe_format_map(template: str, mapping: Any, /) -> str:
    """``str.format_map`` that refuses attribute fields and widths over the value cap."""
    text = str.__str__(template)
    check_format_string(text)
    if _needs_checked_formatter(text):
        return _FORMATTER.vformat(text, (), mapping)
    return str.format_map(text, mapping)


_CONVERSIONS: dict[int, Callable[[Any], str]] = {ord("s"): str, ord("r"): repr,
                                                 ord("a"): ascii}


def guarded_format(value: Any, conversion: int, spec: str) -> str:
    """``_format_``: an f-string field with a format spec (``f'{x:>{w}}'``)."""
    if conversion != -1:
        value = _CONVERSIONS[conversion](value)
    if type(spec) is not str:
        spec = str.__str__(spec)
    check_format_spec(spec)
    return format(value, spec)


_PERCENT_SPEC = re.compile(
    rb"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?(.)", re.DOTALL)


def guarded_mod(left: Any, right: Any) -> Any:
    """``_mod_``: ``'template' % args`` with field widths (``%*d`` included) size-checked."""
    if type(left) is str or type(left) is bytes:
        data = left.encode("utf-8", "surrogatepass") if type(left) is str else left
        if b"%" in data:
            args = right if type(right) is tuple else (right,)
            position = 0
            total = len(data)
            for width, precision, kind in _PERCENT_SPEC.findall(data):
                for number in (width, precision):
                    if number == b"*":
                        value = args[position] if position < len(args) else 0
                        position += 1
                        if type(value) is int and value > 4096:
                            total += value * 4
                    elif number and len(number) < 12:
                        total += int(number) * 4 if int(number) > 4096 else 0
                    elif number:
                        total += 10 ** 12
                if kind != b"%":
                    position += 1
            if total > 4096:
                check_size("'%' formatting", total)
    return left % right


_STR_FORMAT_METHODS = {"format": safe_format, "format_map": safe_format_map}


def _safe_str_format(value: Any) -> Callable[..., str] | None:
    """The safe replacement if ``value`` is ``str.format``/``format_map`` (bound or not)."""
    if value is str.format:
        return safe_format
    if value is str.format_map:
        return safe_format_map
    if type(value) is types.BuiltinMethodType and isinstance(value.__self__, str):
        replacement = _STR_FORMAT_METHODS.get(value.__name__)
        if replacement is not None:
            return functools.partial(replacement, value.__self__)
    return None


def safe_getattr(obj: Any, name: Any, *default: Any) -> Any:
    """The ``getattr`` built-in offered to user code: same checks as attribute syntax."""
    if len(default) > 1:
        raise TypeError(f"getattr expected at most 3 arguments, got {2 + len(default)}")
    try:
        return guarded_getattr(obj, name)
    except AttributeError:
        if default:
            return default[0]
        raise


def safe_hasattr(obj: Any, name: Any) -> bool:
    """The ``hasattr`` built-in: denied names raise instead of answering."""
    try:
        guarded_getattr(obj, name)
    except AttributeError:
        return False
    return True


# --------------------------------------------------------------------------------------------
# Writes, iteration, calls, classes
# --------------------------------------------------------------------------------------------

_WRITABLE_TYPES = frozenset({dict, list, set, bytearray, deque, OrderedDict, defaultdict,
                             Counter, ChainMap})


def guarded_write(obj: Any) -> Any:
    """``_write_``: containers and objects of sandbox classes may change; nothing else."""
    tp = type(obj)
    if tp in _WRITABLE_TYPES:
        return obj
    if getattr(tp, SANDBOX_MARK, None) is SANDBOX_TOKEN:
        bases = getattr(tp, IMMUTABLE_MARK, ())
        return _CheckedWriter(obj, bases) if bases else obj
    if is_sandbox_class(obj):
        bases = getattr(obj, IMMUTABLE_MARK, ())
        return _CheckedWriter(obj, bases) if bases else obj  # class attributes
    raise violation(f"objects of type {tp.__name__!r} cannot be changed in the sandbox (only "
                    "dicts, lists, sets and objects of classes defined in the sandbox can)",
                    construct="write")


#: Built-in value types whose instances end up as keys of process-wide caches (``re``,
#: ``_strptime``, ``functools.lru_cache`` ...). A sandbox subclass may not change how its
#: instances compare or hash, and a subclass of a str/bytes/tuple/frozenset may not replace
#: any method of the built-in (``__getitem__``, ``replace`` ...): a "string" equal to another
#: one, or lying about its characters, would poison those caches for later runs (and,
#: in-process, for everyone). Numbers may override other methods (the guards never trust
#: them: they call ``int.bit_length(x)`` and friends unbound).
IMMUTABLE_BUILTINS = (int, float, complex, str, bytes, tuple, frozenset)
#: Class attribute set by :func:`sandbox_class`: the immutable built-ins a class derives from
#: (computed once per class: the write guard is on the hot path).
IMMUTABLE_MARK = "__agenticraft_immutable_bases__"
_CONTENT_BUILTINS = (str, bytes, tuple, frozenset)
_IDENTITY_METHODS = frozenset({"__eq__", "__ne__", "__hash__"})
# (__len__ may lie: the size guards call the base type's own __len__.)
_OVERRIDABLE = frozenset({"__repr__", "__str__", "__len__", "__module__", "__qualname__",
                          "__doc__", SANDBOX_MARK, "__agenticraft_immutable_bases__"})


def _check_override(name: str, bases: tuple[type, ...]) -> None:
    for base in bases:
        if name in _IDENTITY_METHODS or (
                base in _CONTENT_BUILTINS and name in base.__dict__
                and (name not in _OVERRIDABLE or (name == "__str__" and base is str))):
            raise violation(
                f"a class derived from {base.__name__!r} may not replace {name!r} (values of "
                "built-in types are shared with the host's caches, which must see the "
                "built-in's own comparison, hash and contents)", construct="class")


class _CheckedWriter:
    """What ``_write_`` returns for objects (and classes) derived from immutable built-ins:
    attribute writes may not shadow the built-in's methods (``s.replace = ...``)."""

    __slots__ = ("_bases", "_target")

    def __init__(self, target: Any, bases: tuple[type, ...]) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_bases", bases)

    def __setattr__(self, name: str, value: Any) -> None:
        _check_override(name, self._bases)
        setattr(self._target, name, value)

    def __delattr__(self, name: str) -> None:
        _check_override(name, self._bases)
        delattr(self._target, name)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._target[key] = value

    def __delitem__(self, key: Any) -> None:
        del self._target[key]


def sandbox_class(name: str, bases: tuple[type, ...], namespace: dict[str, Any],
                  **kwargs: Any) -> type:
    """``__metaclass__``: creates user classes and marks them as defined in the sandbox."""
    immutable = tuple(base for base in IMMUTABLE_BUILTINS
                      if any(issubclass(cls, base) for cls in bases if isinstance(cls, type)))
    if immutable:
        for key in namespace:
            _check_override(key, immutable)
    namespace[SANDBOX_MARK] = SANDBOX_TOKEN
    namespace[IMMUTABLE_MARK] = immutable
    meta: type = type
    for base in bases:
        base_meta = type(base)
        if issubclass(meta, base_meta):
            continue
        if issubclass(base_meta, meta):
            meta = base_meta
            continue
        raise TypeError("metaclass conflict: the bases of a class must have compatible "
                        "metaclasses")
    cls: type = meta(name, bases, namespace, **kwargs)
    return cls


def guarded_apply(function: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """``_apply_`` for RestrictedPython-style ``f(*args, **kwargs)`` rewrites."""
    return function(*args, **kwargs)


#: ``_getitem_`` and ``_getiter_`` are the C built-ins: nothing reachable from the sandbox holds
#: frames, modules or code objects in a container (values are filtered when they are read as
#: attributes), so item reads and iteration need no check and stay as fast as native ones.
guarded_getitem = operator.getitem
guarded_getiter = iter

#: RestrictedPython's sequence-unpacking hooks. Our compiler does not emit them for ``for``
#: loops and assignments (they only call ``_getiter_`` again, which checks nothing), but
#: ``with ... as (a, b)`` still uses ``_unpack_sequence_``.
guarded_iter_unpack = guarded_iter_unpack_sequence
guarded_unpack = guarded_unpack_sequence


# --------------------------------------------------------------------------------------------
# print: _print_ hook with an output byte cap
# --------------------------------------------------------------------------------------------


class OutputLimiter:
    """The ``_print_`` hook: ``print`` writes through ``write`` until ``limit`` bytes.

    RestrictedPython calls ``_print_(_getattr_)`` once per scope and then
    ``_print._call_print(...)``; one instance serves a whole run, so the cap is global to it.
    Past the cap, the part that still fits is written, then one marker line, then
    ``ResourceLimitExceeded("max_output_bytes")`` is raised (again on every later print).
    """

    __slots__ = ("_write", "closed", "exceeded", "limit", "used")

    def __init__(self, write: Callable[[str], Any], limit: int) -> None:
        self._write = write
        self.limit = limit
        self.used = 0
        self.exceeded: int | None = None  # bytes attempted when the cap was hit
        self.closed = False  # set when the run ends: its code may not write any more

    def __call__(self, _getattr_: Any = None) -> OutputLimiter:
        return self

    def _call_print(self, *objects: Any, sep: str | None = " ", end: str | None = "\n",
                    file: Any = None, flush: bool = False) -> None:
        if file is not None:
            raise TypeError("print(file=...) is not supported in the sandbox")
        if sep is None:
            sep = " "
        elif type(sep) is not str:
            raise TypeError(f"sep must be None or a string, not {type(sep).__name__}")
        if end is None:
            end = "\n"
        elif type(end) is not str:
            raise TypeError(f"end must be None or a string, not {type(end).__name__}")
        self.emit(sep.join([str(item) for item in objects]) + end)

    def emit(self, text: str) -> None:
        """Write ``text`` if it fits in the remaining budget, else truncate and raise."""
        if self.closed:
            raise dead_run_violation("print()")
        size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
        if self.exceeded is not None:
            raise self.error(self.limit + size)
        if self.used + size <= self.limit:
            self.used += size
            self._write(text)
            return
        remaining = self.limit - self.used
        head = text.encode("utf-8", "surrogatepass")[:remaining].decode("utf-8", "ignore")
        attempted = self.used + size
        self.used = self.limit
        if head:
            self._write(head)
        self._write(f"\n[output truncated at {self.limit} bytes: max_output_bytes]\n")
        self.exceeded = attempted
        raise self.error(attempted)

    def error(self, value: int | None = None) -> ResourceLimitExceeded:
        """A fresh exception (re-raising one instance would keep growing its traceback)."""
        if value is None:
            value = self.exceeded
        return ResourceLimitExceeded("max_output_bytes", value, self.limit)


# --------------------------------------------------------------------------------------------
# Checked methods of built-in types (size caps; exact built-ins into process-wide caches)
# --------------------------------------------------------------------------------------------


def exact(value: Any) -> Any:
    """An exact ``str``/``bytes``/``int`` copy of a subclass instance (others unchanged).

    Arguments that a host library may keep in a process-wide cache go through this, so what
    is cached is plain data whose comparisons and methods are the built-in ones.
    """
    tv = type(value)
    if tv is str or tv is bytes or tv is int:
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bytes):
        return bytes.__bytes__(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return int.__index__(value)
    return value


def _char_bytes(text: Any) -> int:
    return 1 if isinstance(text, bytes | bytearray) or str.isascii(text) else 4


def _checked_join(sep: Any, iterable: Any, /) -> Any:
    items = list(iterable)
    if items:
        total = len(sep) * (len(items) - 1)
        for item in items:
            if isinstance(item, str | bytes | bytearray):
                total += len(item)
        if total > 4096:
            check_size("join()", total * _char_bytes(sep))
    return sep.join(items)


def _width_check(what: str, self: Any, width: Any) -> None:
    if isinstance(width, int) and width > 4096:
        check_size(what, operator.index(width) * _char_bytes(self))


def _checked_ljust(self: Any, width: Any, *args: Any) -> Any:
    _width_check("ljust()", self, width)
    return self.ljust(width, *args)


def _checked_rjust(self: Any, width: Any, *args: Any) -> Any:
    _width_check("rjust()", self, width)
    return self.rjust(width, *args)


def _checked_center(self: Any, width: Any, *args: Any) -> Any:
    _width_check("center()", self, width)
    return self.center(width, *args)


def _checked_zfill(self: Any, width: Any, /) -> Any:
    _width_check("zfill()", self, width)
    return self.zfill(width)


def _checked_expandtabs(self: Any, tabsize: Any = 8) -> Any:
    if isinstance(tabsize, int) and tabsize > 64:
        tabs = self.count(b"\t" if isinstance(self, bytes | bytearray) else "\t")
        check_size("expandtabs()", (len(self) + tabs * operator.index(tabsize))
                   * _char_bytes(self))
    return self.expandtabs(tabsize)


def _checked_to_bytes(self: Any, length: Any = 1, *args: Any, **kwargs: Any) -> bytes:
    if isinstance(length, int):
        check_size("int.to_bytes()", operator.index(length))
    return int.to_bytes(self, length, *args, **kwargs)


def _checked_sub(self: Any, repl: Any, string: Any, count: Any = 0) -> Any:
    return self.sub(exact(repl), string, count=count)


def _checked_subn(self: Any, repl: Any, string: Any, count: Any = 0) -> Any:
    return self.subn(exact(repl), string, count=count)


def _checked_expand(self: Any, template: Any, /) -> Any:
    return self.expand(exact(template))


def _checked_strptime(cls: Any, date_string: Any, format: Any, /) -> Any:
    return cls.strptime(exact(date_string), exact(format))


_STRING_TYPES = (str, bytes)
#: name -> (types whose method it replaces, replacement taking the object first)
_CHECKED_METHODS: dict[str, tuple[tuple[type, ...], Callable[..., Any]]] = {
    "join": (_STRING_TYPES, _checked_join),
    "ljust": (_STRING_TYPES, _checked_ljust),
    "rjust": (_STRING_TYPES, _checked_rjust),
    "center": (_STRING_TYPES, _checked_center),
    "zfill": (_STRING_TYPES, _checked_zfill),
    "expandtabs": (_STRING_TYPES, _checked_expandtabs),
    "to_bytes": ((int,), _checked_to_bytes),
    "sub": ((re.Pattern,), _checked_sub),
    "subn": ((re.Pattern,), _checked_subn),
    "expand": ((re.Match,), _checked_expand),
    "strptime": ((datetime.date,), _checked_strptime),
}


def _checked_method(obj: Any, name: str, value: Any) -> Callable[..., Any] | None:
    """The checked replacement of ``obj.<name>`` when ``obj`` is a built-in that has it."""
    kinds, replacement = _CHECKED_METHODS[name]
    if name == "strptime":
        if isinstance(obj, type) and issubclass(obj, kinds):
            return functools.partial(replacement, obj)
        if isinstance(obj, kinds):
            return functools.partial(replacement, type(obj))
        return None
    if isinstance(obj, kinds):
        return functools.partial(replacement, obj)
    if isinstance(obj, type) and issubclass(obj, kinds):
        return replacement  # unbound: str.join(sep, items)
    return None
