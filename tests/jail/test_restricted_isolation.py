"""Issue 14, in-process: nothing from one ``run_restricted`` call survives into the next, code
never runs after its run, output side doors are capped and every size side door fails fast."""

from __future__ import annotations

import gc
import time

import pytest

from agenticraft.jail.restricted import format_user_exception, guards, run_restricted
from agenticraft.wire.codec import to_safe
from agenticraft.wire.errors import ResourceLimitExceeded, SecurityViolation
from agenticraft.wire.limits import ResourceLimits
from restricted_payloads import (
    ALL_SAFE,
    GC_TRIGGER,
    LEFTOVER_GENERATOR,
    POISONING,
    RE_DEBUG_FLOOD,
    REPR_UNDER_RUN_CONTEXT,
    SIZE_SIDE_DOORS,
    STR_UNDER_RUN_CONTEXT,
    UNRAISABLE_FLOOD,
    WARNINGS_FLOOD,
    YIELD_IN_FINALLY,
    YIELD_IN_NESTED_DEF_OK,
)

LIMITS = ResourceLimits(memory_mb=128, max_output_bytes=2_000)


def run(source: str, limits: ResourceLimits = LIMITS, **kwargs) -> tuple[dict, str]:
    out: list[str] = []
    result = run_restricted(source, limits, write=out.append, allowed_imports=ALL_SAFE, **kwargs)
    return result, "".join(out)


# -- no state crosses runs -------------------------------------------------------------------

@pytest.mark.parametrize(("poison", "check", "expected"),
                         [p[1:] for p in POISONING], ids=[p[0] for p in POISONING])
def test_poisoning_in_run_n_does_not_affect_run_n_plus_1(poison, check, expected):
    first: list[str] = []
    run_restricted(poison, LIMITS, write=first.append, allowed_imports=ALL_SAFE)
    written_by_run_n = len(first)
    result, out = run(check)
    for name, value in expected.items():
        assert result[name] == value, (name, result)
    # code planted by run N must not run during run N+1 (whichever output it would use)
    assert "PLANTED-RAN" not in out
    assert "PLANTED-RAN" not in "".join(first[written_by_run_n:])


def test_overriding_eq_hash_on_immutable_builtin_subclasses_is_refused():
    for base in ("int", "str", "float", "bytes", "tuple", "frozenset", "complex"):
        for method in ("__eq__", "__hash__", "__ne__", "__getitem__", "replace", "__iter__"):
            source = (f"class X({base}):\n    def {method}(self, *args):\n        return 1\n")
            if method == "replace" and base not in ("str", "bytes"):
                continue
            if (method in ("__getitem__", "__iter__") and base in ("int", "float", "complex")) or (
                    method == "__getitem__" and base == "frozenset"):
                continue  # numbers may override other methods; the guards never trust them
            with pytest.raises(SecurityViolation):
                run(source)
    # ... nor later, through attribute writes on the class or an instance
    for target in ("S", "S('a')"):
        with pytest.raises(SecurityViolation):
            run(f"class S(str):\n    pass\nx = {target}\nx.replace = lambda *a: 'x'\n")
    # adding methods, and __repr__, stay allowed
    result, _ = run("class Tag(str):\n    def shout(self):\n        return self.upper()\n"
                    "    def __repr__(self):\n        return 'Tag'\nr = Tag('a').shout()")
    assert result["r"] == "A"


def test_leftover_generator_finally_does_not_run_in_next_run():
    _, first_out = run(LEFTOVER_GENERATOR)
    _, out = run(GC_TRIGGER)
    gc.collect()
    assert "LEFTOVER-FINALLY-RAN" not in out
    # it ran at the end of its own run, under that run's limits and output
    assert "LEFTOVER-FINALLY-RAN" in first_out


def test_code_of_a_finished_run_cannot_import_or_print_in_a_later_run():
    result, _ = run("def leak():\n    import math\n    return math.pi\n"
                    "def talk():\n    print('from the dead')\nholder = [leak, talk]")
    leak, talk = result["holder"]
    # while another run is active, the old functions keep no rights
    context = guards.SandboxContext(128, ALL_SAFE, guards.OutputLimiter(lambda s: None, 100))
    token = guards.activate(context)
    try:
        with pytest.raises(SecurityViolation, match="finished run"):
            leak()
        with pytest.raises(SecurityViolation, match="finished run"):
            talk()
    finally:
        guards.deactivate(token)


# -- yield / await in finally ----------------------------------------------------------------

@pytest.mark.parametrize("source", YIELD_IN_FINALLY)
def test_yield_in_finally_is_refused(source):
    with pytest.raises(SecurityViolation, match="finally"):
        run(source)


def test_yield_in_a_function_defined_inside_finally_is_allowed():
    assert run(YIELD_IN_NESTED_DEF_OK)[0]["r"] == [1]


def test_codec_does_not_swallow_keyboard_interrupt():
    class Interrupting:
        def __repr__(self):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        to_safe(Interrupting())

    class Failing:
        def __repr__(self):
            raise ValueError("x")

    assert "unrepresentable" in to_safe(Failing())


# -- nothing runs after the run --------------------------------------------------------------

def test_result_repr_runs_inside_the_run_context_and_limits():
    result, _ = run(REPR_UNDER_RUN_CONTEXT, serialize=to_safe)
    assert result["shown"] == "pi=3.14"
    # 100 MB is more than one value may use with memory_mb=128: refused inside the run
    assert "unrepresentable" in result["huge"] and "ResourceLimitExceeded" in result["huge"]


def test_exception_str_is_formatted_inside_the_run_context():
    with pytest.raises(Exception) as info:
        run(STR_UNDER_RUN_CONTEXT)
    ename, evalue, text = format_user_exception(info.value)
    assert (ename, evalue) == ("Boom", "boom 3.1")
    assert "Boom: boom 3.1" in text


def test_unraisable_output_goes_to_the_capped_run_output(capfd):
    with pytest.raises(ResourceLimitExceeded) as info:
        run(UNRAISABLE_FLOOD)
    assert info.value.limit == "max_output_bytes"
    captured = capfd.readouterr()
    assert "unraisable-" not in captured.err and "unraisable-" not in captured.out


def test_unraisable_traceback_has_no_host_paths():
    _, out = run("def gen():\n    try:\n        yield 1\n    finally:\n"
                 "        raise ValueError('once')\ng = gen()\nnext(g)\ng = None\n")
    assert "ValueError: once" in out
    assert "agenticraft" not in out and ".py" not in out and "guards" not in out


def test_warnings_go_to_the_capped_run_output(capfd):
    with pytest.raises(ResourceLimitExceeded):
        run(WARNINGS_FLOOD)
    captured = capfd.readouterr()
    assert "FutureWarning" not in captured.err + captured.out
    _, out = run("import re\nx = re.compile('[[c]')")
    assert "FutureWarning" in out and "agenticraft" not in out and "/re/" not in out


def test_re_debug_flag_is_stripped(capfd):
    result, out = run(RE_DEBUG_FLOOD)
    captured = capfd.readouterr()
    assert result["r"] is True
    assert "LITERAL" not in captured.out + captured.err + out


# -- size side doors -------------------------------------------------------------------------

@pytest.mark.parametrize("source", [p[1] for p in SIZE_SIDE_DOORS],
                         ids=[p[0] for p in SIZE_SIDE_DOORS])
def test_size_side_door_raises_resource_limit_quickly(source):
    started = time.monotonic()
    with pytest.raises(ResourceLimitExceeded):
        run(source)
    assert time.monotonic() - started < 5.0


def test_nesting_checked_iterators_still_answer_isinstance() -> None:
    """map/filter/zip/enumerate are stand-ins that bound chain depth; programs that ask
    ``isinstance(x, map)`` keep working, also for a chain deeper than one level."""
    out: list[str] = []
    result = run_restricted(
        "m = map(str, [1, 2])\n"
        "deep = map(str, map(str, [1]))\n"
        "answers = [isinstance(m, map), isinstance(deep, map), isinstance(m, zip),\n"
        "           isinstance(zip([1], [2]), zip), isinstance(filter(None, [1]), filter),\n"
        "           isinstance(enumerate('a'), enumerate), list(deep)]\n",
        {}, write=out.append)
    assert result["answers"] == [True, True, False, True, True, True, ["1"]]


def test_percent_formatting_with_a_template_in_a_variable_is_size_checked() -> None:
    started = time.monotonic()
    with pytest.raises(ResourceLimitExceeded):
        run("t = '%' + '999999999' + 'd'\nx = t % 1\n")
    with pytest.raises(ResourceLimitExceeded):
        run("t = b'%*d'\nx = t % (10**9, 1)\n")
    assert time.monotonic() - started < 1.0
    assert run("n = 17\nt = '%05d|%s'\nx = [n % 5, t % (n, 'ok'), 7.5 % 2]\n")[0]["x"] == [
        2, "00017|ok", 1.5]


def test_ordinary_tuples_keep_working() -> None:
    source = ("def pack(*a):\n    'doc'\n    return a\n"
              "t = (1, (2, 3), [4])\nu = pack(*t)\nv = tuple(x for x in range(3))\n"
              "a, b = 1, 2\na, b = b, a\nd = {(a, b): 1, (a, (b, 'x')): 2}\n"
              "w = (lambda *z: z)(1, 2)\n"
              "r = (isinstance(t, tuple), u == t, v, (a, b), sorted(d.values()), w, "
              "pack.__doc__)\n")
    result, _ = run(source)
    assert result["r"] == (True, True, (0, 1, 2), (2, 1), [1, 2], (1, 2), "doc")


def test_deep_tuple_cache_forgets_tuples_at_run_end() -> None:
    from agenticraft.jail.restricted import standins

    run("t = ()\nfor i in range(500):\n    t = (t, i)\n")
    assert standins._TUPLE_DEPTHS == {}
