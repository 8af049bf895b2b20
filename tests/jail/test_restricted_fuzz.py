"""Property tests: whatever text goes in, the restricted sandbox answers in a bounded way.

Every run must end with a returned dict or one of: SyntaxError, SecurityViolation /
PermissionDenied, ResourceLimitExceeded, or an ordinary Exception raised by the user's code; never
a BaseException outside Exception, never a hang, and the host (built-ins, the sandbox's shared
tables, the recursion limit) must be unchanged afterwards.
"""

from __future__ import annotations

import builtins
import sys
import types
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agenticraft.jail.restricted import SAFE_MODULES, run_restricted
from agenticraft.jail.restricted.guards import SANDBOX_BUILTINS
from agenticraft.wire.errors import (
    PermissionDenied,
    ResourceLimitExceeded,
    SecurityViolation,
)
from agenticraft.wire.limits import ResourceLimits

LIMITS = ResourceLimits(memory_mb=64, max_output_bytes=2_000)
IMPORTS = frozenset({"math", "json", "re", "string", "collections", "functools", "fractions"})
MARKER_BYTES = len("\n[output truncated at 2000 bytes: max_output_bytes]\n")
SECRET = "agc-fuzz-secret-90c2"

FUZZ = settings(max_examples=300, deadline=timedelta(seconds=1), database=None,
                suppress_health_check=[HealthCheck.too_slow])


def _snapshot() -> tuple:
    return (dict(vars(builtins)), dict(SANDBOX_BUILTINS),
            {name: dict(object.__getattribute__(proxy, "__dict__"))
             for name, proxy in SAFE_MODULES.items()})


BASELINE = _snapshot()


def check_outcome(source: str) -> None:
    """Run ``source`` and assert the outcome is one of the allowed ones."""
    out: list[str] = []
    recursion_limit = sys.getrecursionlimit()  # hypothesis changes it while it runs
    try:
        result = run_restricted(source, LIMITS, write=out.append, allowed_imports=IMPORTS)
    except (SyntaxError, SecurityViolation, PermissionDenied, ResourceLimitExceeded):
        pass
    except Exception:
        pass  # an ordinary error raised by the user's code (NameError, ZeroDivisionError ...)
    except BaseException as exc:  # pragma: no cover - this is the failure being tested for
        pytest.fail(f"{type(exc).__name__} escaped the sandbox for {source!r}")
    else:
        assert isinstance(result, dict)
        for name, value in result.items():
            assert not name.startswith("_")
            assert not isinstance(value, types.ModuleType | types.FunctionType | type)
    written = "".join(out).encode("utf-8", "surrogatepass")
    assert len(written) <= LIMITS.max_output_bytes + MARKER_BYTES
    assert SECRET.encode() not in written
    assert _snapshot() == BASELINE, f"host state changed by {source!r}"
    assert sys.getrecursionlimit() == recursion_limit


# ---------------------------------------------------------------------------------------------
# (a) arbitrary text
# ---------------------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_decoded_as_text(data: bytes) -> None:
    check_outcome(data.decode("utf-8", "replace"))


@FUZZ
@given(st.text(max_size=200))
def test_random_unicode_text(text: str) -> None:
    check_outcome(text)


# ---------------------------------------------------------------------------------------------
# (b) programs assembled from a grammar of snippets, nasty ones included
# ---------------------------------------------------------------------------------------------

NAMES = st.sampled_from(["a", "b", "x", "obj", "g", "C", "e"])
INTS = st.sampled_from(["0", "1", "2", "3", "7", "-3", "64", "10**10", "10**100", "10**10**10"])
EXPONENTS = st.sampled_from(["0", "1", "2", "3", "-1", "10**10", "10**100"])
SHIFTS = st.sampled_from(["0", "1", "64", "10**10"])
SMALL = st.sampled_from(["0", "1", "3", "10", "40"])
ATTRS = st.sampled_from([
    "__class__", "__globals__", "__dict__", "__subclasses__", "__init__", "__name__",
    "__traceback__", "__builtins__", "__code__", "gi_frame", "f_back", "f_globals", "tb_frame",
    "cr_frame", "mro", "obj", "format", "format_map", "real", "append", "upper", "items",
    "register", "__self__", "__closure__", "_\uff3fclass__"])
STRINGS = st.sampled_from(["''", "'abc'", "'{0.__class__}'", "'{}'", "'\\u00e9'", "'%s'"])
MODULES = st.sampled_from(["math", "json", "os", "sys", "re", "random", "pickle", "string",
                           "collections", "subprocess", "fractions", "ctypes"])
BIG = st.sampled_from(["10**10**10", "'a'*10**12", "[0]*10**10", "1 << 10**10", "2**64",
                       "pow(10, 10**10)", "(1,) * 10**11"])


@st.composite
def snippet(draw: st.DrawFn) -> str:
    n, m = draw(NAMES), draw(NAMES)
    templates = [
        f"{n} = {draw(INTS)}",
        f"{n} = {m} {draw(st.sampled_from(['+', '-', '*', '//', '%', '&', '|']))} {draw(INTS)}",
        f"{n} = {m} ** {draw(EXPONENTS)}",
        f"{n} = {m} << {draw(SHIFTS)}",
        f"{n} *= {draw(INTS)}",
        f"{n} **= {draw(EXPONENTS)}",
        f"{n} = {draw(BIG)}",
        f"{n} = {draw(STRINGS)} * {draw(INTS)}",
        f"{n} = [{m}] * {draw(INTS)}",
        f"{n} = {m}.{draw(ATTRS)}",
        f"{n} = {m}.{draw(ATTRS)}.{draw(ATTRS)}",
        f"{n} = getattr({m}, {draw(ATTRS)!r})",
        f"{n} = getattr({m}, '_' + {draw(ATTRS)!r})",
        f"{n} = hasattr({m}, {draw(ATTRS)!r})",
        f"{n} = ().{draw(ATTRS)}",
        f"{n} = {draw(STRINGS)}.format({m})",
        f"{n} = {draw(STRINGS)}.format_map({{'a': {m}}})",
        f"{n} = f'{{{m}!r}}'",
        f"{n} = str({m})",
        f"{n} = {m}[{draw(INTS)}]",
        f"{n} = {{'k': {m}, 'n': {draw(INTS)}}}",
        f"{n} = [j * {draw(INTS)} for j in range({draw(SMALL)})]",
        f"for i in range({draw(SMALL)}):\n    {n} = i * {draw(INTS)}",
        f"print({m})",
        f"print({draw(STRINGS)} * {draw(INTS)})",
        f"for i in range({draw(SMALL)}):\n    print('line', i, {m})",
        f"def f(k):\n    return f(k - 1) + 1 if k > 0 else 0\n{n} = f({draw(INTS)})",
        f"class C:\n    def __init__(self, v):\n        self.v = v\n{n} = C({m})",
        f"class C(Exception):\n    pass\ntry:\n    raise C({m})\nexcept C as err:\n"
        f"    {n} = err.args",
        f"try:\n    {n} = {m} / 0\nexcept Exception as err:\n    {n} = err.{draw(ATTRS)}",
        "try:\n    pass\nexcept:\n    pass\nfinally:\n    pass",
        f"g = (j for j in range(3))\n{n} = next(g)",
        f"import {draw(MODULES)}",
        f"from {draw(MODULES)} import {draw(st.sampled_from(['sqrt', 'dumps', 'path', 'x']))}",
        f"raise {draw(st.sampled_from(['ValueError', 'SystemExit', 'KeyboardInterrupt']))}()",
        f"del {n}",
        f"{n} = lambda: {m}",
        f"{n} = sorted([{draw(INTS)}, {draw(INTS)}])",
        f"{n} = {m} if {m} else {draw(INTS)}",
        "x = ().__class__.__bases__[0].__subclasses__()",
        "g = (j for j in [1])\nx = g.gi_frame.f_back.f_globals",
        "exec('1')",
        "\uff45\uff58\uff45\uff43('1')",
        "try:\n    pass\nexcept* ValueError:\n    pass",
        f"{n} = vars()",
        f"{n} = type({m})",
        f"{n} = __import__('os')",
    ]
    return draw(st.sampled_from(templates))


# The pool names start bound, so most snippets reach the guards instead of a NameError.
PRELUDE = ("a = 5\nb = 'text'\nx = [1, 2, 3]\nobj = {'k': 1}\ng = (j for j in range(3))\n"
           "e = ValueError('v')\nC = 2.5\n")
PROGRAMS = st.lists(snippet(), min_size=1, max_size=6).map(lambda parts: PRELUDE + "\n".join(parts))


@FUZZ
@given(PROGRAMS)
def test_grammar_programs(source: str) -> None:
    check_outcome(source)


@FUZZ
@given(PROGRAMS, st.sampled_from(["    ", "  ", "\t"]))
def test_grammar_programs_inside_a_function(source: str, indent: str) -> None:
    body = "\n".join(indent + line for line in source.splitlines())
    check_outcome(f"def main():\n{body}\n    return 1\nresult = main()\n")
