"""Escape attempts against the restricted sandbox, each really executed in-process.

Every payload is a complete attack that would end with ``SECRET`` (a sentinel in this host
module) in the output or the returned namespace. Each must be refused at compile time
(``SecurityViolation``) or by a runtime guard, and the secret must never show up. A few payloads
are first run with plain ``exec`` to prove they are real escapes outside the sandbox.
"""

from __future__ import annotations

import builtins
import contextlib
import sys
import time

import pytest

from agenticraft.jail.restricted import format_user_exception, run_restricted
from agenticraft.wire.errors import (
    PermissionDenied,
    ResourceLimitExceeded,
    SecurityViolation,
)
from agenticraft.wire.limits import ResourceLimits

SECRET = "agc-host-secret-4b1d9e"  # what every payload tries to read from this module
MOD = __name__
LIMITS = ResourceLimits(memory_mb=128, max_output_bytes=10_000)
RUNTIME_DENIALS = (SecurityViolation, PermissionDenied, AttributeError, NameError, TypeError)
ALL_SAFE = frozenset({"math", "statistics", "json", "re", "datetime", "itertools", "functools",
                      "collections", "random", "decimal", "fractions", "string"})


def run(source: str, *, imports: frozenset[str] = ALL_SAFE,
        limits: ResourceLimits = LIMITS) -> tuple[dict, str]:
    out: list[str] = []
    result = run_restricted(source, limits, write=out.append, allowed_imports=imports)
    return result, "".join(out)


def assert_blocked(source: str, expected: type[BaseException] | tuple = RUNTIME_DENIALS, *,
                   imports: frozenset[str] = ALL_SAFE, compile_time: bool = False
                   ) -> BaseException:
    """Run ``source``; it must raise ``expected`` and leak nothing."""
    out: list[str] = []
    with pytest.raises(expected) as info:
        result = run_restricted(source, LIMITS, write=out.append, allowed_imports=imports)
        pytest.fail(f"escape was not blocked, result: {result!r}")  # pragma: no cover
    assert SECRET not in "".join(out)
    assert SECRET not in str(info.value)
    if compile_time:
        assert isinstance(info.value, SecurityViolation)
        assert not out, "a compile-time violation must not run anything"
        assert info.value.lineno is not None
        assert str(info.value).startswith("Security violation at line ")
    return info.value


def plain_exec_leaks(source: str) -> bool:
    """Control: the same payload under plain exec reaches the secret (so the test is real)."""
    namespace: dict = {}
    exec(source, namespace)
    return namespace.get("leak") == SECRET


# ---------------------------------------------------------------------------------------------
# Payloads that are real escapes in plain Python
# ---------------------------------------------------------------------------------------------

SUBCLASS_WALK = f"""
for c in ().__class__.__bases__[0].__subclasses__():
    if c.__name__ == 'catch_warnings':
        leak = c()._module.sys.modules[{MOD!r}].SECRET
"""

FUNCTION_GLOBALS = f"""
import statistics
leak = statistics.mean.__globals__['sys'].modules[{MOD!r}].SECRET
"""

GENERATOR_FRAME = """
def gen():
    yield g.gi_frame.f_back
g = gen()
frame = next(g)
leak = frame.f_back.f_globals['SECRET']
"""

TRACEBACK_FRAME = """
try:
    1 / 0
except Exception as e:
    leak = e.__traceback__.tb_frame.f_back.f_globals['SECRET']
"""

FORMAT_LEAK = f"""
import fractions
leak = '{{0.__new__.__globals__[sys].modules[{MOD}].SECRET}}'.format(fractions.Fraction(1))
"""

FORMAT_MAP_LEAK = f"""
import fractions
leak = '{{f.__new__.__globals__[sys].modules[{MOD}].SECRET}}'.format_map(
    {{'f': fractions.Fraction(1)}})
"""


@pytest.mark.parametrize("payload", [SUBCLASS_WALK, FUNCTION_GLOBALS, GENERATOR_FRAME,
                                     TRACEBACK_FRAME, FORMAT_LEAK, FORMAT_MAP_LEAK],
                         ids=["subclasses", "globals", "gi_frame", "tb_frame", "format",
                              "format_map"])
def test_payloads_are_real_escapes_outside_the_sandbox(payload: str) -> None:
    assert plain_exec_leaks(payload)


@pytest.mark.parametrize("payload", [SUBCLASS_WALK, FUNCTION_GLOBALS, GENERATOR_FRAME,
                                     TRACEBACK_FRAME], ids=["subclasses", "globals", "gi_frame",
                                                            "tb_frame"])
def test_real_escapes_are_refused_at_compile_time(payload: str) -> None:
    assert_blocked(payload, SecurityViolation, compile_time=True)


@pytest.mark.parametrize("payload", [FORMAT_LEAK, FORMAT_MAP_LEAK], ids=["format", "format_map"])
def test_format_string_attribute_walks_are_refused_at_run_time(payload: str) -> None:
    error = assert_blocked(payload, SecurityViolation)
    assert "str.format() field" in str(error)


# ---------------------------------------------------------------------------------------------
# The same families through dynamic names (runtime guard)
# ---------------------------------------------------------------------------------------------

DYNAMIC = {
    "subclasses": f"""
c = getattr((), '__cla' + 'ss__')
for k in getattr(getattr(c, '__ba' + 'ses__')[0], '__subcl' + 'asses__')():
    if k.__name__ == 'catch_warnings':
        leak = k()._module.sys.modules[{MOD!r}].SECRET
""",
    "function_globals": f"""
import statistics
leak = getattr(statistics.mean, '__glo' + 'bals__')['sys'].modules[{MOD!r}].SECRET
""",
    "guard_globals": "leak = getattr(getattr, '__glob' + 'als__')['sys']",
    "print_self": "leak = getattr(print, '__se' + 'lf__')",
    "gi_frame": """
def gen():
    yield getattr(g, 'gi_' + 'frame')
g = gen()
leak = next(g)
""",
    "gi_code": "g = (i for i in [1])\nleak = getattr(g, 'gi_' + 'code')",
    "gi_future_name": "g = (i for i in [1])\nleak = getattr(g, 'gi_' + 'whatever')",
    "tb_frame": """
try:
    1 / 0
except Exception as e:
    leak = getattr(getattr(e, '__trace' + 'back__'), 'tb_' + 'frame')
""",
    "code_object": "f = lambda: 0\nleak = getattr(f, '__co' + 'de__')",
    "closure_cell": "x = 1\nf = lambda: x\nleak = getattr(f, '__clo' + 'sure__')",
    "class_dict": "class C:\n    pass\nleak = getattr(C, '__di' + 'ct__')",
    "mro_to_base_exception": "leak = getattr(ZeroDivisionError, 'mr' + 'o')()",
    "module_proxy_internals": "import math\nleak = getattr(math, '__di' + 'ct__')",
    "random_internals": "import random\nleak = getattr(random.random, '__se' + 'lf__')",
    "getattr_default_does_not_hide_denial": "leak = getattr((), '__class__', None)",
    "hasattr_probe": "leak = hasattr((), '__class__')",
    "attribute_error_obj": """
import math
try:
    math.does_not_exist
except AttributeError as e:
    leak = e.obj
""",
    "str_subclass_attribute_name": """
class Name(str):
    def __eq__(self, other):
        return True
    def __hash__(self):
        return hash('real')
leak = getattr(1, Name('__class__'))
""",
    "super_format": f"""
import fractions
class S(str):
    def run(self, x):
        return super().format(x)
leak = S('{{0.__new__.__globals__[sys].modules[{MOD}].SECRET}}').run(fractions.Fraction(1))
""",
    "unbound_str_format": f"""
import fractions
leak = str.format('{{0.__new__.__globals__[sys].modules[{MOD}].SECRET}}', fractions.Fraction(1))
""",
    "nested_format_spec": "leak = '{0:{1.__class__}}'.format(1, 2)",
    "string_formatter": "import string\nleak = string.Formatter().format('{0.__class__}', 1)",
    "dict_init_on_foreign_dict": "d = {}\ndict.__init__(d, a=1)",
    "super_init_of_foreign_type": "leak = {}\nsuper(dict, leak).__init__(a=1)",
    "class_level_super_init": """
class D(dict):
    pass
init = super(D, D).__init__
""",
    "abc_register_on_host_class": "import fractions\nfractions.Fraction.register(str)",
    # a registered virtual Rational would let Fraction.__pow__ trust a fake .numerator
    "abc_register_on_sandbox_subclass": """
import fractions
class F(fractions.Fraction):
    pass
class Fake:
    numerator = 10**10
    denominator = 1
F.register(Fake)
leak = fractions.Fraction(3) ** Fake()
""",
    "abc_register_through_super": """
import fractions
class F(fractions.Fraction):
    pass
super(F, F).register(str)
""",
    "total_ordering_on_host_class": """
import functools, json
functools.total_ordering(json.JSONEncoder)
""",
    "write_module_proxy": "import math\nmath.pi = 3",
    "write_builtin_class": "int.real = 3",
    "write_foreign_object": "import fractions\nf = fractions.Fraction(1)\nf.x = 1",
    "update_wrapper_missing": "import functools\nfunctools.update_wrapper",
    "decimal_context_missing": "import decimal\ndecimal.getcontext().prec = 10 ** 9",
    "json_submodule_attribute": "import json\nleak = json.decoder",
    "from_import_submodule": "from json import decoder\nleak = decoder",
    "fullwidth_string_name": "leak = getattr((), '\uff3f\uff3fclass\uff3f\uff3f')",
    "type_builtin": "f = lambda: 0\nleak = type(f)",
    "dir_builtin": "leak = dir()",
    "open_builtin": "leak = open('/etc/passwd').read()",
    "exit_builtin": "exit()",
    "quit_builtin": "quit()",
    "setattr_builtin": "setattr(1, 'x', 2)",
    "raise_system_exit": "raise SystemExit(0)",
    "raise_base_exception": "raise BaseException()",
    "catch_base_exception": "try:\n    1 / 0\nexcept BaseException:\n    pass\nleak = 1",
    "raise_keyboard_interrupt": "raise KeyboardInterrupt",
    "exception_group": "raise ExceptionGroup('g', [ValueError()])",
    "print_to_file": "print('x', file=[])",
    "attribute_name_not_str": "leak = getattr(1, 5)",
}


@pytest.mark.parametrize("source", list(DYNAMIC.values()), ids=list(DYNAMIC))
def test_dynamic_escapes_are_denied_at_run_time(source: str) -> None:
    expected = (*RUNTIME_DENIALS, ImportError)  # `from json import decoder`: name not found
    assert_blocked(source, expected)


def test_runtime_denial_reports_the_user_line() -> None:
    error = assert_blocked("x = 1\ny = 2\nz = getattr(x, '__cl' + 'ass__')\n", SecurityViolation)
    assert isinstance(error, SecurityViolation)
    assert error.lineno == 3
    assert error.construct == "__class__"
    assert str(error) == ("Security violation at line 3: access to attribute '__class__' is "
                          "not allowed (names starting with '_' are private to the sandbox).")


# ---------------------------------------------------------------------------------------------
# Refused at compile time
# ---------------------------------------------------------------------------------------------

COMPILE_TIME = {
    "dunder_attribute": "x = ().__class__",
    "function_globals": "def f():\n    pass\nx = f.__globals__",
    "gi_frame": "g = (i for i in [1])\nx = g.gi_frame",
    "gi_code": "g = (i for i in [1])\nx = g.gi_code",
    "cr_frame": "x = 1\ny = x.cr_frame",
    "ag_frame": "x = 1\ny = x.ag_frame",
    "tb_frame": "x = 1\ny = x.tb_frame",
    "f_back": "x = 1\ny = x.f_back",
    "f_locals": "x = 1\ny = x.f_locals",
    "co_code": "x = 1\ny = x.co_code",
    "co_consts": "x = 1\ny = x.co_consts",
    "func_globals_py2": "x = 1\ny = x.func_globals",
    "mro": "x = ZeroDivisionError.mro()",
    "code_object": "x = (lambda: 0).__code__",
    "import_dunder": "x = __import__('os')",
    "builtins_dunder": "x = __builtins__",
    "exec": "exec('x = 1')",
    "eval": "x = eval('1')",
    "compile": "x = compile('1', 'f', 'eval')",
    "globals": "x = globals()",
    "locals": "x = locals()",
    "vars": "x = vars()",
    "breakpoint": "breakpoint()",
    "posonly_default_shadows_guard": "def f(_getattr_=None, /):\n    return ().x",
    "default_shadows_guard": "def f(a, _getattr_=print):\n    return a.x",
    "kwonly_shadows_guard": "def f(*, _write_=None):\n    pass",
    "lambda_shadows_guard": "f = lambda _getiter_=list: 0",
    "assign_guard_name": "_getattr_ = lambda o, n: 0",
    "global_guard_name": "def f():\n    global _write_\n    _write_ = 1",
    "comprehension_target": "x = [1 for _getattr_ in [1]]",
    "walrus_guard_name": "x = (_getattr_ := 1)",
    "except_as_guard_name": "try:\n    pass\nexcept Exception as _getattr_:\n    pass",
    "import_as_guard_name": "import math as _getattr_",
    "exit_method": "class C:\n    def __exit__(self, *args):\n        pass",
    "enter_method": "class C:\n    def __enter__(self):\n        return self",
    "getattr_method": "class C:\n    def __getattr__(self, name):\n        return 1",
    "del_method": "class C:\n    def __del__(self):\n        pass",
    "format_method": "class C:\n    def __format__(self, spec):\n        return ''",
    "class_dunder_assignment": "class C:\n    __slots__ = ()",
    "dunder_def_at_module_level": "def __repr__(self):\n    return ''",
    "aug_assign_dunder": "x = 1\nx.__class__ += 1",
    "aug_assign_internal": "x = 1\nx.gi_frame += 1",
    "store_dunder": "x = 1\nx.__init__ = 1",
    "unicode_dunder_attribute": "x = ()._\uff3fclass__",
    "unicode_dunder_name": "_\uff3fimport__('os')",
    "fullwidth_exec": "\uff45\uff58\uff45\uff43('1')",
    "ligature_globals": "x = \uff47lobals()",
    "except_star": "try:\n    pass\nexcept* ValueError:\n    pass",
    "async_def": "async def f():\n    pass",
    "await": "async def f():\n    await g()",
    "match": "match 1:\n    case 1:\n        pass",
    "metaclass_keyword": "class C(metaclass=print):\n    pass",
    "class_double_star": "class C(**{'metaclass': print}):\n    pass",
    "finally_return": "def f():\n    try:\n        1 / 0\n    finally:\n        return 1",
    "finally_break": "while True:\n    try:\n        pass\n    finally:\n        break",
    "finally_continue": "for i in [1]:\n    try:\n        pass\n    finally:\n        continue",
    "relative_import": "from . import x",
    "star_import": "from math import *",
    "private_from_import": "from random import _inst",
    "roles": "x__roles__ = 1",
}


@pytest.mark.parametrize("source", list(COMPILE_TIME.values()), ids=list(COMPILE_TIME))
def test_refused_at_compile_time(source: str) -> None:
    assert_blocked(source, SecurityViolation, compile_time=True)


@pytest.mark.parametrize("module", ["pickle", "marshal", "ctypes", "os", "sys", "subprocess",
                                    "importlib", "builtins", "gc", "inspect", "json.decoder",
                                    "os.path", "collections.abc"])
def test_dangerous_imports_are_refused_even_when_requested(module: str) -> None:
    for statement in (f"import {module}", f"from {module} import x"):
        error = assert_blocked(statement, SecurityViolation,
                               imports=ALL_SAFE | {module, module.split(".")[0]},
                               compile_time=True)
        assert error.construct == "import"
        assert repr(module) in str(error)


def test_safe_module_needs_to_be_allowed() -> None:
    error = assert_blocked("import math", SecurityViolation, imports=frozenset(),
                           compile_time=True)
    assert "no imports were allowed" in str(error)
    assert run("import math\nx = math.sqrt(16)", imports=frozenset({"math"}))[0] == {"x": 4.0}


def test_all_violations_are_combined_in_one_message() -> None:
    source = "a = 1\nb = a.__class__\nc = 2\nd = eval('1')\nimport os\n"
    error = assert_blocked(source, SecurityViolation, compile_time=True)
    lines = str(error).splitlines()
    assert len(lines) == 3
    assert lines[0] == ("Security violation at line 2: access to attribute '__class__' is not "
                        "allowed (names starting with '_' are private to the sandbox).")
    assert lines[1].startswith("Security violation at line 4: eval() is not available")
    assert lines[2].startswith("Security violation at line 5: import of module 'os'")
    assert error.lineno == 2
    assert error.construct == "__class__"


def test_syntax_errors_are_plain_syntax_errors() -> None:
    with pytest.raises(SyntaxError) as info:
        run("x = 1\ny = (\n")
    assert not isinstance(info.value, SecurityViolation)
    assert info.value.lineno == 2
    assert "never closed" in info.value.msg
    with pytest.raises(SyntaxError):
        run("x = 1\x00")
    with pytest.raises(SyntaxError):
        run("x = " + "-" * 100_000 + "1")


# ---------------------------------------------------------------------------------------------
# BaseException: never raised by, nor swallowed by, sandboxed code
# ---------------------------------------------------------------------------------------------


def test_bare_except_does_not_swallow_keyboard_interrupt() -> None:
    def write(text: str) -> None:
        raise KeyboardInterrupt

    source = "try:\n    print('x')\nexcept:\n    pass\nleak = 'swallowed'\n"
    with pytest.raises(KeyboardInterrupt):
        run_restricted(source, LIMITS, write=write)


def test_bare_except_still_catches_ordinary_errors() -> None:
    result, _ = run("try:\n    1 / 0\nexcept:\n    caught = True\n")
    assert result == {"caught": True}


def test_builtins_and_module_members_expose_nothing_dangerous() -> None:
    import types

    from agenticraft.jail.restricted import SAFE_MODULES
    from agenticraft.jail.restricted.builtins import SAFE_BUILTINS

    for name in ("type", "vars", "dir", "open", "exec", "eval", "compile", "globals", "locals",
                 "input", "help", "memoryview", "setattr", "delattr", "breakpoint", "exit",
                 "quit", "SystemExit", "KeyboardInterrupt", "GeneratorExit", "BaseException",
                 "BaseExceptionGroup", "ExceptionGroup", "id"):
        assert name not in SAFE_BUILTINS, name
    assert SAFE_BUILTINS["getattr"] is not getattr
    assert SAFE_BUILTINS["pow"] is not pow
    members = list(SAFE_BUILTINS.values())
    for proxy in SAFE_MODULES.values():
        members += list(object.__getattribute__(proxy, "__dict__").values())
    for value in members:
        assert not isinstance(value, types.ModuleType | types.CodeType | types.FrameType)
        if isinstance(value, type) and issubclass(value, BaseException):
            assert issubclass(value, Exception), value
    assert "Formatter" not in object.__getattribute__(SAFE_MODULES["string"], "__dict__")


def test_no_base_exception_class_is_reachable() -> None:
    source = """
names = []
for obj in [ValueError, ZeroDivisionError, StopIteration, RecursionError, Exception]:
    for attr in ['mro', '__mro__', '__bases__', '__base__', '__class__']:
        try:
            getattr(obj, attr)
            names.append(attr)
        except Exception:
            pass
"""
    result, _ = run(source)
    assert result["names"] == []


# ---------------------------------------------------------------------------------------------
# f-strings, tracebacks
# ---------------------------------------------------------------------------------------------


def test_fstring_repr_is_fine_but_format_spec_cannot_walk_attributes() -> None:
    result, _ = run("x = [1, 'a']\ns = f'{x!r} {x[0]:>3}'")
    assert result["s"] == "[1, 'a']   1"
    with pytest.raises(ValueError):
        run("s = f\"{1:{'{0.__class__}'}}\"")
    # datetime's format spec is strftime: the text is copied, nothing is looked up
    result, _ = run("import datetime\ns = f\"{datetime.date(2020, 1, 1):{'{0.__class__}'}}\"")
    assert result["s"] == "{0.__class__}"


def test_guard_frames_never_appear_in_tracebacks() -> None:
    source = "def f(x):\n    return getattr(x, '__cl' + 'ass__')\n\nf(1)\n"
    with pytest.raises(SecurityViolation) as info:
        run(source)
    tb = info.value.__traceback__
    files = []
    while tb is not None:
        files.append(tb.tb_frame.f_code.co_filename)
        tb = tb.tb_next
    assert not any(name.endswith(("guards.py", "builtins.py", "modules.py")) for name in files)
    assert files[-2:] == ["<sandbox>", "<sandbox>"]
    ename, evalue, text = format_user_exception(info.value, source=source)
    assert ename == "SecurityViolation"
    assert "line 2" in evalue
    assert text.startswith("Traceback (most recent call last):\n")
    assert 'File "<sandbox>", line 4, in <module>\n    f(1)\n' in text
    assert 'File "<sandbox>", line 2, in f\n    return getattr(' in text
    assert "guards.py" not in text and "execute.py" not in text


def test_user_exception_traceback_and_chain() -> None:
    source = "def f():\n    try:\n        1 / 0\n    except ZeroDivisionError as e:\n" \
             "        raise ValueError('bad') from e\nf()\n"
    with pytest.raises(ValueError) as info:
        run(source)
    ename, evalue, text = format_user_exception(info.value, source=source)
    assert (ename, evalue) == ("ValueError", "bad")
    assert "ZeroDivisionError: division by zero" in text
    assert "direct cause" in text
    assert text.rstrip().endswith("ValueError: bad")
    assert "execute.py" not in text
    # run_restricted remembers the source, so callers need not pass it
    assert format_user_exception(info.value)[2] == text


def test_compile_errors_format_without_host_frames() -> None:
    with pytest.raises(SecurityViolation) as violation:
        run("x = 1\ny = x.__class__\n")
    ename, evalue, text = format_user_exception(violation.value)
    assert ename == "SecurityViolation"
    assert text == f"SecurityViolation: {evalue}\n"
    with pytest.raises(SyntaxError) as syntax:
        run("x = 1\ny = (\n")
    ename, _evalue, text = format_user_exception(syntax.value)
    assert ename == "SyntaxError"
    assert text.startswith('  File "<sandbox>", line 2\n    y = (\n')
    assert "compiler.py" not in text


# ---------------------------------------------------------------------------------------------
# Size caps, output cap, recursion
# ---------------------------------------------------------------------------------------------

SIZE_BOMBS = {
    "power_tower": "x = 10**10**10",
    "string_repeat": "x = 'a'*10**12",
    "list_repeat": "x = [0]*10**10",
    "shift": "x = 1 << 10**10",
    "variable_repeat": "n = 10**12\nx = 'a' * n",
    "reversed_repeat": "n = 10**12\nx = n * 'a'",
    "augmented_repeat": "x = 'a'\nx *= 10**12",
    "augmented_item": "x = ['a']\nx[0] *= 10**12",
    "augmented_attribute": "class C:\n    pass\nc = C()\nc.s = 'a'\nc.s *= 10**12",
    "augmented_power": "x = 10\nx **= 10**10",
    "augmented_shift": "x = 1\nx <<= 10**10",
    "int_squaring": "x = 1 << 100_000_000\ny = x * x",
    "pow_builtin": "x = pow(10, 10**10)",
    "fraction_power": "import fractions\nx = fractions.Fraction(3, 2) ** 10**10",
    "fraction_exponent": "import fractions\nx = 3 ** fractions.Fraction(10**10)",
    "fraction_subclass_exponent": "import fractions\nclass F(fractions.Fraction):\n"
                                  "    numerator = 1\nx = 3 ** F(10**10)",
    "int_subclass_lies": """
import fractions
class I(int):
    numerator = 10**10
    def bit_length(self):
        return 0
x = fractions.Fraction(2) ** I(1)
y = 2 ** I(10**10)
""",
    "str_subclass_len_lies": "class S(str):\n    def __len__(self):\n        return 0\n"
                             "x = S('abc') * 10**12",
    "math_factorial": "import math\nx = math.factorial(10**9)",
    "math_comb": "import math\nx = math.comb(10**10, 5 * 10**9)",
    "math_prod": "import math\nn = 1 << 100_000_000\nx = math.prod([n, n])",
    "random_bits": "import random\nx = random.getrandbits(10**12)",
    "random_choices": "import random\nx = random.choices([1], k=10**12)",
}


SIZE_LIMITS = ResourceLimits(memory_mb=32)  # one value may use 16 MB


@pytest.mark.parametrize("source", list(SIZE_BOMBS.values()), ids=list(SIZE_BOMBS))
def test_size_bombs_fail_fast(source: str) -> None:
    start = time.perf_counter()
    with pytest.raises(ResourceLimitExceeded) as info:
        run(source, limits=SIZE_LIMITS)
    elapsed = time.perf_counter() - start
    assert elapsed < 0.1, f"took {elapsed:.3f} s"
    assert info.value.limit == "memory_mb"
    assert info.value.allowed == SIZE_LIMITS.memory_mb
    assert info.value.value > SIZE_LIMITS.memory_mb // 2


def test_size_caps_leave_normal_values_alone() -> None:
    result, _ = run("a = 2 ** 1000\nb = 'ab' * 1000\nc = [0] * 10000\nd = 1 << 4000\n"
                    "e = 3 * 4.5\nf = (10**30) * (10**30)\nn = 50\ng = '-' * n\n")
    assert result["a"] == 2 ** 1000
    assert result["b"] == "ab" * 1000
    assert len(result["c"]) == 10000
    assert result["d"] == 1 << 4000
    assert result["e"] == 13.5
    assert result["f"] == 10 ** 60
    assert result["g"] == "-" * 50


def test_print_flood_is_cut_exactly_at_the_cap() -> None:
    limits = ResourceLimits(max_output_bytes=1000)
    out: list[str] = []
    with pytest.raises(ResourceLimitExceeded) as info:
        run_restricted("while True:\n    print('abcdefghi')\n", limits, write=out.append)
    text = "".join(out)
    marker = "\n[output truncated at 1000 bytes: max_output_bytes]\n"
    assert text.endswith(marker)
    assert len(text[: -len(marker)].encode()) == 1000
    assert text[: -len(marker)] == ("abcdefghi\n" * 100)[:1000]
    assert info.value.limit == "max_output_bytes"
    assert info.value.allowed == 1000


def test_swallowed_output_limit_still_ends_the_run() -> None:
    limits = ResourceLimits(max_output_bytes=50)
    out: list[str] = []
    source = "for i in range(100):\n    try:\n        print('x' * 20)\n    except Exception:\n" \
             "        pass\ndone = True\n"
    with pytest.raises(ResourceLimitExceeded) as info:
        run_restricted(source, limits, write=out.append)
    assert info.value.limit == "max_output_bytes"
    assert "".join(out).count("[output truncated") == 1


def test_deep_recursion_is_a_resource_limit() -> None:
    before = sys.getrecursionlimit()
    with pytest.raises(ResourceLimitExceeded) as info:
        run("def f(n):\n    return f(n + 1)\nf(0)\n")
    assert info.value.limit == "recursion"
    assert sys.getrecursionlimit() == before
    # and a moderately deep recursion still works
    result, _ = run("def f(n):\n    return 0 if n == 0 else 1 + f(n - 1)\nx = f(300)\n")
    assert result == {"x": 300}


def test_host_state_is_unchanged_after_escapes() -> None:
    snapshot = dict(vars(builtins))
    for source in list(DYNAMIC.values())[:20]:
        with contextlib.suppress(Exception):
            run(source)
    assert dict(vars(builtins)) == snapshot
    assert globals()["SECRET"] == "agc-host-secret-4b1d9e"
