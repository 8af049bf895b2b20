"""Run compiled sandbox code in-process and hand back what it bound.

One call: compile (cached), build fresh globals from a shared template (the guards and the
built-ins are shared, only the output budget and the run context are per run), ``exec`` the
native code object with a modest recursion limit, and return the plain values the code left in
its namespace. Hard wall-clock and memory limits are not enforced here: the worker process
running this code is killed from outside when it overruns them.

Nothing crosses from one run into the next (issue 14). Measured choice: a warm worker keeps
serving runs, and each run is isolated in-process, which costs about 1 us per run (a fresh
fork of the warm worker per run costs about 1.1 ms for fork + exit + wait alone):

* values that host libraries keep in process-wide caches are exact built-ins: sandbox
  subclasses of int/float/complex/str/bytes/tuple/frozenset may not replace ``__eq__``,
  ``__ne__``, ``__hash__`` (nor, for str/bytes/tuple/frozenset, any method of the built-in),
  not even later through attribute writes; the ``re`` proxy, ``Pattern.sub``/``subn``,
  ``Match.expand`` and ``strptime`` pass exact copies of their arguments on;
* a run's context (imports, per-run ``random``) only serves frames whose globals are that
  run's namespace, and its ``print`` is closed when it ends: code of a finished run that is
  still referenced somewhere has no rights in a later run;
* with ``serialize`` (the worker), results are converted and exceptions formatted inside the
  run, then the namespace is cleared and ``gc.collect()`` runs inside the run (the worker's
  heap is frozen at start, so this costs well under a microsecond): generators left in cycles
  run their ``finally`` in their own run, under its limits and output cap;
* warnings and "Exception ignored" reports go to the run's capped output, with tracebacks of
  the user's frames only; ``re.DEBUG`` is stripped.

Crash safety: ``run_restricted`` called in-process is NOT crash-safe; the restricted *sandbox*
(``SandboxType.RESTRICTED``, which runs this function in a worker process) is. In-process, no
memory limit holds (a run may exhaust the caller's memory), and CPython recurses on the C stack
without any check in places no guard sits on: the guards refuse what they see (value sizes,
iterator chains, Decimal digits, tuples nested deeper than ``MAX_NESTING`` when built by a
display, ``*args`` or ``tuple()``), but a tuple nested ~130,000 deep (64 bytes of C stack per
level on 3.11, 8 MB stack) built by a C function that stores its argument in a new tuple
(``zip``/``enumerate`` items, ``dict.items()``, ``dict.popitem()``, an exception's ``args``,
``itertools`` products) and then hashed natively (a set member, a dict key, an ``lru_cache``
argument) is a segmentation fault of the calling process. In the sandbox's worker the main
thread's stack may grow past what the worker's memory limit can pay for
(``jail.confine.rlimits.stack_bound_mb``), so any such recursion ends as ``memory_mb`` (a
``ResourceLimitExceeded``; the worker is replaced, the next run gets a fresh one), never as a
stack overflow, whichever C function built the nesting.
"""

from __future__ import annotations
import __future__

import contextlib
import decimal
import gc
import sys
import types
import warnings
from collections.abc import Callable
from typing import Any

from agenticraft.jail.restricted import guards
from agenticraft.jail.restricted.builtins import SAFE_BUILTINS
from agenticraft.jail.restricted.compiler import DEFAULT_FILENAME, compile_restricted_code
from agenticraft.jail.restricted.modules import SAFE_MODULES, ModuleProxy
from agenticraft.jail.restricted.standins import (
    DECIMAL_CONTEXT,
    checked_varargs,
    forget_tuples,
    guarded_tuple,
)
from agenticraft.wire.errors import ResourceLimitExceeded, SecurityViolation
from agenticraft.wire.limits import ResourceLimits

_SAFE_MODULE_NAMES = frozenset(SAFE_MODULES)

#: Frames granted to sandboxed code above the caller's current stack depth.
RECURSION_FRAMES = 400

#: Hooks called by the compiled code. They live in the shared ``__builtins__`` dict (user code
#: cannot name them: they start with '_'), so the per-run globals stay tiny.
HOOKS: dict[str, Any] = {
    "__metaclass__": guards.sandbox_class,
    "_getattr_": guards.guarded_getattr,
    "_getattr_vetted_": guards.guarded_getattr_vetted,
    "_getitem_": guards.guarded_getitem,
    "_getiter_": guards.guarded_getiter,
    "_write_": guards.guarded_write,
    "_iter_unpack_sequence_": guards.guarded_iter_unpack,
    "_unpack_sequence_": guards.guarded_unpack,
    "_inplacevar_": guards.guarded_inplacevar,
    "_apply_": guards.guarded_apply,
    "_mul_": guards.guarded_mul,
    "_pow_": guards.guarded_pow,
    "_lshift_": guards.guarded_lshift,
    "_mod_": guards.guarded_mod,
    "_tuple_": guarded_tuple,
    "_vararg_": checked_varargs,
    "_format_": guards.guarded_format,
    "_aug_attr_": guards.guarded_aug_attr,
    "_aug_item_": guards.guarded_aug_item,
    "_catchable_": Exception,
}
guards.SANDBOX_BUILTINS.clear()
guards.SANDBOX_BUILTINS.update(SAFE_BUILTINS)
guards.SANDBOX_BUILTINS.update(HOOKS)

_GLOBALS_TEMPLATE: dict[str, Any] = {
    "__builtins__": guards.SANDBOX_BUILTINS,
    "__name__": "__main__",
}

# Values the caller gets no use from (and should not hold): code, classes, modules, callables.
_SKIPPED_VALUE_TYPES = (
    type, types.ModuleType, ModuleProxy, types.FunctionType, types.BuiltinFunctionType,
    types.MethodType, types.MethodWrapperType, types.WrapperDescriptorType,
    types.MethodDescriptorType, types.ClassMethodDescriptorType, guards.OutputLimiter,
    __future__._Feature,
)


def _stack_depth() -> int:
    frame: types.FrameType | None = sys._getframe(1)
    depth = 0
    while frame is not None:
        depth += 1
        frame = frame.f_back
    return depth


class RestrictedRunError(Exception):
    """A user exception, reduced inside its run to the strings the caller may show.

    ``run_restricted(..., serialize=...)`` raises this instead of the user's exception object,
    so that nothing of the user's (its ``__str__``, objects in its ``args``, frames in its
    traceback) is left to run or be freed after the run.
    """

    def __init__(self, ename: str, evalue: str, traceback: str) -> None:
        super().__init__(evalue)
        self.ename = ename
        self.evalue = evalue
        self.traceback = traceback


#: Longest exception message / traceback text kept from a run.
MAX_EVALUE = 2_000
MAX_TRACEBACK = 20_000


def run_restricted(source: str, limits: ResourceLimits, *, write: Callable[[str], None],
                   allowed_imports: frozenset[str] = frozenset(),
                   serialize: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """Run ``source`` in the restricted sandbox and return the names it bound.

    ``write`` receives everything the code prints (at most ``limits.max_output_bytes`` bytes),
    including warnings and "Exception ignored" reports of the run. Raises ``SyntaxError``,
    :class:`SecurityViolation` (policy), ``ResourceLimitExceeded`` (``memory_mb`` size caps,
    ``max_output_bytes``, ``recursion``) or whatever ``Exception`` the user's code raised,
    with a traceback limited to the user's own frames; its text is formatted inside the run.

    ``serialize``: when given (the worker passes ``wire.codec.to_safe``), every value is
    converted inside the run (a ``__repr__`` runs under the run's limits and rights), the run's
    namespace is cleared and collected before the run ends, and a user exception is replaced
    by a :class:`RestrictedRunError` holding only its formatted text. Without it the caller
    gets the live values (and exception) and must treat them as untrusted: code reached
    through them after the run cannot print or import (that run is finished).
    """
    if type(limits) is not ResourceLimits:
        limits = ResourceLimits.from_value(limits)  # a mapping of limits is accepted too
    code = compile_restricted_code(source, allowed_imports=allowed_imports)
    printer = guards.OutputLimiter(write, limits.max_output_bytes)
    namespace = dict(_GLOBALS_TEMPLATE)
    namespace["_print_"] = printer
    context = guards.SandboxContext(limits.memory_mb,
                                    frozenset(allowed_imports) & _SAFE_MODULE_NAMES, printer,
                                    namespace)

    old_limit = sys.getrecursionlimit()
    new_limit = min(old_limit, _stack_depth() + RECURSION_FRAMES)
    token = guards.activate(context)
    sys.setrecursionlimit(new_limit)
    saved = None if _PROCESS_HOOKS else _enter_run_hooks()
    decimal_context = decimal.getcontext()
    if decimal_context is not DECIMAL_CONTEXT:
        decimal.setcontext(DECIMAL_CONTEXT)
    error: BaseException | None = None
    values: dict[str, Any] = {}
    try:
        try:
            exec(code, namespace)
        except RecursionError as exc:
            error = _limit_error(ResourceLimitExceeded(
                "recursion", None, RECURSION_FRAMES,
                f"Resource limit exceeded: recursion deeper than about {RECURSION_FRAMES} "
                "frames. Use less recursion (for example a loop instead of a recursive "
                "call)."), exc, source, serialize)
        except MemoryError as exc:
            error = _limit_error(ResourceLimitExceeded("memory_mb", None, limits.memory_mb),
                                 exc, source, serialize)
        except (ResourceLimitExceeded, SecurityViolation) as exc:
            error = _limit_error(exc, exc, source, serialize)
        except Exception as exc:
            # (KeyboardInterrupt & co. come from the host, not the user's code: untouched.)
            error = _user_error(exc, source, serialize)
        if error is None:
            if printer.exceeded is not None:
                # The code caught the ResourceLimitExceeded raised by print() and went on: the
                # output is truncated all the same, so the run still ends with the limit error.
                error = printer.error()
            else:
                values = collect_results(namespace)
                if serialize is not None:
                    values = {name: serialize(value) for name, value in values.items()}
        if serialize is not None:
            # Nothing of this run may run later: drop its objects and collect its cycles
            # now, while its context, limits and output are still the current ones.
            namespace.clear()
            gc.collect()
        else:
            gc.collect(1)  # the young generations only: the caller's heap may be large
    finally:
        printer.closed = True
        forget_tuples()
        if decimal_context is not DECIMAL_CONTEXT:
            decimal.setcontext(decimal_context)
        if saved is not None:
            _leave_run_hooks(saved)
        sys.setrecursionlimit(old_limit)
        guards.deactivate(token)
    if error is not None:
        raise error
    return values


def _limit_error(error: BaseException, cause: BaseException, source: str,
                 serialize: Callable[[Any], Any] | None) -> BaseException:
    _remember_source(error, source)
    if serialize is not None:
        error.__context__ = error.__cause__ = None
        error.__suppress_context__ = True
        return error.with_traceback(None)
    return error.with_traceback(clean_traceback(cause.__traceback__))


def _user_error(exc: Exception, source: str,
                serialize: Callable[[Any], Any] | None) -> BaseException:
    """Format ``exc`` now, inside the run (its ``__str__`` is user code)."""
    _remember_source(exc, source)
    ename, evalue, text = format_user_exception(exc, source=source)
    evalue = evalue[:MAX_EVALUE]
    text = text if len(text) <= MAX_TRACEBACK else text[:MAX_TRACEBACK] + "...[truncated]\n"
    if serialize is not None:
        exc.__traceback__ = None
        return RestrictedRunError(ename, evalue, text)
    with contextlib.suppress(AttributeError, TypeError):
        exc.__dict__[_FORMATTED_ATTRIBUTE] = (ename, evalue, text)
    return exc.with_traceback(clean_traceback(exc.__traceback__))


# --------------------------------------------------------------------------------------------
# Warnings and "Exception ignored" reports go to the run's capped output
# --------------------------------------------------------------------------------------------

_PROCESS_HOOKS = False


def _run_printer() -> guards.OutputLimiter | None:
    printer = guards.current_context().printer
    return None if printer is None or printer.closed else printer


def _emit(printer: guards.OutputLimiter, text: str) -> None:
    with contextlib.suppress(Exception):  # over the cap: the run already ends with the error
        printer.emit(text)


def _show_warning(message: Any, category: Any, filename: str, lineno: int, file: Any = None,
                  line: Any = None) -> None:
    printer = _run_printer()
    if printer is None:
        if _PROCESS_HOOKS:
            return  # a worker between runs: no run to report to
        _ORIGINAL_SHOWWARNING(message, category, filename, lineno, file, line)
        return
    where = guards.user_lineno()
    name = getattr(category, "__name__", "Warning")
    place = f"{DEFAULT_FILENAME}:{where}: " if where else ""
    _emit(printer, f"{place}{name}: {str(message)[:MAX_EVALUE]}\n")


def _unraisable_hook(unraisable: Any) -> None:
    printer = _run_printer()
    if printer is None:
        if not _PROCESS_HOOKS:
            _ORIGINAL_UNRAISABLEHOOK(unraisable)
        return
    obj = unraisable.object
    if isinstance(obj, types.GeneratorType | types.CoroutineType) or guards.is_sandbox_class(
            type(obj)) or guards.is_sandbox_function(obj):
        shown = f"<{type(obj).__name__} object {getattr(obj, '__name__', '')}>"
    else:
        shown = f"<{type(obj).__name__} object>" if obj is not None else ""
    exc = unraisable.exc_value
    if exc is None:
        return
    if exc.__traceback__ is None and unraisable.exc_traceback is not None:
        exc = exc.with_traceback(unraisable.exc_traceback)
    _ename, _evalue, text = format_user_exception(exc)
    head = f"Exception ignored in: {shown}\n" if shown else "Exception ignored:\n"
    _emit(printer, head + text[:MAX_TRACEBACK])


_ORIGINAL_SHOWWARNING = warnings.showwarning
_ORIGINAL_UNRAISABLEHOOK = sys.unraisablehook


def install_process_hooks() -> None:
    """For a process that only runs sandboxed code (the restricted worker): route warnings
    and unraisable-exception reports to the active run, drop them between runs, use the
    sandbox's decimal context, and freeze the heap so ``gc.collect()`` at the end of a run
    only walks what runs created. Without this, each run installs and removes the hooks."""
    global _PROCESS_HOOKS
    warnings.resetwarnings()
    warnings.simplefilter("always")
    warnings.showwarning = _show_warning
    sys.unraisablehook = _unraisable_hook
    decimal.setcontext(DECIMAL_CONTEXT)
    gc.collect()
    gc.freeze()
    _PROCESS_HOOKS = True


def _enter_run_hooks() -> tuple[Any, ...]:
    saved = (warnings.filters[:], warnings.showwarning, sys.unraisablehook)
    warnings.simplefilter("always")
    warnings.showwarning = _show_warning
    sys.unraisablehook = _unraisable_hook
    return saved


def _leave_run_hooks(saved: tuple[Any, ...]) -> None:
    filters, showwarning, hook = saved
    warnings.filters[:] = filters
    warnings._filters_mutated()  # type: ignore[attr-defined]
    warnings.showwarning = showwarning
    sys.unraisablehook = hook


_PLAIN_TYPES = frozenset({int, float, str, bool, list, dict, tuple, set, type(None), bytes})


def collect_results(namespace: dict[str, Any]) -> dict[str, Any]:
    """The user's variables: no ``_`` names, no modules, functions, classes or built-ins."""
    return {name: value for name, value in namespace.items()
            if name[:1] != "_" and (type(value) in _PLAIN_TYPES
                                    or not isinstance(value, _SKIPPED_VALUE_TYPES))}


_SOURCE_ATTRIBUTE = "__agenticraft_sandbox_source__"
_FORMATTED_ATTRIBUTE = "__agenticraft_sandbox_formatted__"


def _remember_source(exc: BaseException, source: str) -> None:
    """Let :func:`format_user_exception` show code lines without being given the source."""
    with contextlib.suppress(AttributeError, TypeError):
        exc.__dict__[_SOURCE_ATTRIBUTE] = source


def clean_traceback(tb: types.TracebackType | None) -> types.TracebackType | None:
    """A copy of ``tb`` with only sandboxed frames (no guard or executor internals)."""
    kept: list[types.TracebackType] = []
    while tb is not None:
        if guards.is_sandbox_frame(tb.tb_frame):
            kept.append(tb)
        tb = tb.tb_next
    result: types.TracebackType | None = None
    for item in reversed(kept):
        result = types.TracebackType(result, item.tb_frame, item.tb_lasti, item.tb_lineno)
    return result


def _safe_str(value: BaseException) -> str:
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__name__} object>"


def _format_one(exc: BaseException, lines: list[str] | None, filename: str) -> list[str]:
    name = type(exc).__name__
    message = _safe_str(exc)
    if isinstance(exc, SyntaxError) and not isinstance(exc, guards.SecurityViolation):
        where = f'  File "{exc.filename or filename}", line {exc.lineno}\n'
        out = [where]
        if exc.text:
            out.append(f"    {exc.text.strip()}\n")
        out.append(f"{name}: {exc.msg}\n")
        return out
    frames: list[str] = []
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if guards.is_sandbox_frame(frame):
            code = frame.f_code
            frames.append(f'  File "{code.co_filename}", line {tb.tb_lineno}, '
                          f"in {code.co_name}\n")
            if lines and code.co_filename == filename and 0 < tb.tb_lineno <= len(lines):
                frames.append(f"    {lines[tb.tb_lineno - 1].strip()}\n")
        tb = tb.tb_next
    out = []
    if frames:
        out.append("Traceback (most recent call last):\n")
        out.extend(_collapse_repeats(frames))
    out.append(f"{name}: {message}\n" if message else f"{name}\n")
    return out


def _collapse_repeats(frames: list[str], keep: int = 3) -> list[str]:
    """Long recursions: show a repeated frame a few times, then a count (like CPython)."""
    out: list[str] = []
    index = 0
    while index < len(frames):
        count = 1
        while index + count < len(frames) and frames[index + count] == frames[index]:
            count += 1
        out.extend(frames[index:index + min(count, keep)])
        if count > keep:
            out.append(f"  [Previous line repeated {count - keep} more times]\n")
        index += count
    return out


def format_user_exception(exc: BaseException, *, source: str | None = None,
                          filename: str = DEFAULT_FILENAME) -> tuple[str, str, str]:
    """``(ename, evalue, traceback_text)`` for an exception from sandboxed code.

    The traceback shows only frames of sandboxed code (never guard or host frames), with source
    lines (``source``, or the source ``run_restricted`` recorded on the exception), and the
    ``raise ... from`` chain the user built. For an exception raised out of
    :func:`run_restricted`, the text formatted inside the run is returned (the exception's
    ``__str__`` is user code and does not run again outside it).
    """
    if isinstance(exc, RestrictedRunError):
        return exc.ename, exc.evalue, exc.traceback
    formatted = getattr(exc, "__dict__", {}).get(_FORMATTED_ATTRIBUTE)
    if type(formatted) is tuple and source is None:
        return formatted
    if source is None:
        remembered = getattr(exc, "__dict__", {}).get(_SOURCE_ATTRIBUTE)
        source = remembered if type(remembered) is str else None
    lines = source.splitlines() if source is not None else None
    chain: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(chain) < 20:
        seen.add(id(current))
        chain.append(current)
        if current.__cause__ is not None:
            current = current.__cause__
        elif not current.__suppress_context__:
            current = current.__context__
        else:
            current = None
    parts: list[str] = []
    older: BaseException | None = None
    for item in reversed(chain):
        if older is not None:
            parts.append("\nThe above exception was the direct cause of the following "
                         "exception:\n\n" if item.__cause__ is older else
                         "\nDuring handling of the above exception, another exception "
                         "occurred:\n\n")
        parts.extend(_format_one(item, lines, filename))
        older = item
    return type(exc).__name__, _safe_str(exc), "".join(parts)
