"""Payloads for the restricted sandbox's run-isolation tests (issue 14).

Shared by tests/jail/test_restricted_isolation.py (``run_restricted`` in-process) and
tests/sandbox/test_restricted_isolation_sandbox.py (``SandboxManager`` -> RESTRICTED, same warm
worker). Each poisoning payload must end *successfully* (it catches its own errors), so that
the warm worker is kept and the next run really is run N+1 in the same process.
"""

from __future__ import annotations

ALL_SAFE = frozenset({"math", "statistics", "json", "re", "datetime", "itertools", "functools",
                      "collections", "random", "decimal", "fractions", "string"})

# Wraps an attack so that the run always ends normally (the sandbox may refuse it).
_TRY = "try:\n{body}\nexcept Exception as exc:\n    refused = str(exc)\n"


def _guarded(body: str) -> str:
    return _TRY.format(body="\n".join("    " + line for line in body.strip().splitlines()))


# (name, poison run N, check run N+1, {name: expected value in run N+1})
POISONING = [
    ("re-flags-int-eq-hash", _guarded("""
import re
class Flags(int):
    def __eq__(self, other):
        return True
    def __hash__(self):
        return hash(0)
re.compile("abc", Flags(2))
re.compile("needle", Flags(2))
"""), "import re\nr = bool(re.match('abc', 'ABC'))\ns = bool(re.search('needle', 'NEEDLE'))",
     {"r": False, "s": False}),
    ("re-sub-repl-str-eq-hash", _guarded("""
import re
class Repl(str):
    def __eq__(self, other):
        return True
    def __hash__(self):
        return hash('[\\\\1]')
for i in range(3):
    re.sub('(a)', Repl('<\\\\1>'), 'a')
    re.compile('(a)').sub(Repl('<\\\\1>'), 'a')
"""), "import re\nr = re.sub('(a)', '[\\\\1]', 'a')\ns = re.compile('(a)').sub('[\\\\1]', 'a')",
     {"r": "[a]", "s": "[a]"}),
    ("re-repl-lying-getitem", _guarded("""
import re
class Liar(str):
    def __getitem__(self, index):
        return '<\\\\1>'[index]
re.sub('(b)', Liar('[\\\\1]'), 'b')
re.compile('(b)').sub(Liar('[\\\\1]'), 'b')
"""), "import re\nr = re.sub('(b)', '[\\\\1]', 'b')", {"r": "[b]"}),
    ("strptime-format-eq-hash", _guarded("""
import datetime
class Fmt(str):
    def __eq__(self, other):
        return True
    def __hash__(self):
        return hash('%d/%m/%Y')
datetime.datetime.strptime('01/02/2020', Fmt('%m/%d/%Y'))
"""), "import datetime\nd = datetime.datetime.strptime('01/02/2020', '%d/%m/%Y')\n"
      "r = [d.day, d.month]", {"r": [1, 2]}),
    ("planted-eq-prints-and-seeds-random", _guarded("""
import re
class Planted(int):
    def __eq__(self, other):
        import random
        random.seed(1)
        print('PLANTED-RAN')
        return True
    def __hash__(self):
        return hash(0)
re.compile('xyz', Planted(0))
re.compile('abc', Planted(0))
"""), "import re\nr = bool(re.match('abc', 'abc'))\nq = bool(re.match('xyz', 'xyz'))",
     {"r": True, "q": True}),
    ("immutable-subclass-setattr-method", _guarded("""
import datetime
class Fmt(str):
    pass
fmt = Fmt('%m/%d/%Y')
fmt.replace = lambda *args: '%m/%d/%Y'
datetime.datetime.strptime('01/02/2020', fmt)
"""), "import datetime\nd = datetime.datetime.strptime('03/04/2020', '%d/%m/%Y')\n"
      "r = [d.day, d.month]", {"r": [3, 4]}),
]

# Code from run N that would run during run N+1 (a generator `finally` in a garbage cycle).
LEFTOVER_GENERATOR = """
def gen():
    try:
        yield 1
    finally:
        print('LEFTOVER-FINALLY-RAN')
        import math
class Box:
    pass
box = Box()
box.me = box
box.g = gen()
next(box.g)
box = None
"""
# Run N+1: allocates enough container objects to trigger the cyclic garbage collector.
GC_TRIGGER = """
junk = []
for i in range(50000):
    junk.append([i])
junk = None
r = 1
"""

# yield / yield from / await inside finally: refused at compile time.
YIELD_IN_FINALLY = [
    "def g():\n    try:\n        yield 1\n    finally:\n        yield 2\n",
    "def g():\n    try:\n        yield 1\n    finally:\n        x = yield\n",
    "def g():\n    try:\n        pass\n    finally:\n        yield from [1, 2]\n",
    "def g():\n    try:\n        pass\n    finally:\n        for i in range(3):\n"
    "            if i:\n                yield i\n",
    "def g():\n    try:\n        pass\n    finally:\n        try:\n            pass\n"
    "        finally:\n            yield 3\n",
    "def g():\n    try:\n        pass\n    finally:\n        while True:\n"
    "            print((yield))\n",
    # (async def is refused anyway; the await in finally is reported too)
    "async def g():\n    try:\n        pass\n    finally:\n        await g()\n",
]
# ... but a generator defined inside a finally block is fine.
YIELD_IN_NESTED_DEF_OK = ("try:\n    pass\nfinally:\n    def g():\n        yield 1\n"
                          "r = list(g())\n")

# Values whose __repr__ / exceptions whose __str__ must run under the run's own context.
REPR_UNDER_RUN_CONTEXT = """
import math
class Shown:
    def __repr__(self):
        import math
        return 'pi=%.2f' % math.pi
shown = Shown()
class Huge:
    def __repr__(self):
        return 'x' * (100 * 1024 * 1024)
huge = Huge()
"""
STR_UNDER_RUN_CONTEXT = """
import math
class Boom(Exception):
    def __str__(self):
        import math
        return 'boom %.1f' % math.pi
raise Boom()
"""

# Output that used to bypass max_output_bytes (and showed host paths).
UNRAISABLE_FLOOD = """
def gen(i):
    try:
        yield i
    finally:
        raise ValueError('unraisable-' + str(i) + '-' + 'u' * 50)
for i in range(300):
    g = gen(i)
    next(g)
    g = None
"""
WARNINGS_FLOOD = """
import re
for i in range(300):
    try:
        re.compile('[[' + 'a' * i + ']')
    except re.error:
        pass
"""
RE_DEBUG_FLOOD = """
import re
for i in range(300):
    re.compile('ab+c' + 'd' * i, 128)
r = bool(re.compile('ab', 128).match('ab'))
"""

# Each must raise ResourceLimitExceeded quickly (memory_mb=128 -> 64 MB per value).
SIZE_SIDE_DOORS = [
    ("mul-constant-compounds", "s = 'ab'\nfor i in range(40):\n    s = s * 64"),
    ("mul-constant-list-compounds", "x = [0]\nfor i in range(40):\n    x = x * 64"),
    ("pow-constant-compounds", "x = 3\nfor i in range(40):\n    x = x ** 8"),
    ("pow-2-compounds", "x = 3\nfor i in range(60):\n    x = x ** 2"),
    ("round-int-negative-digits", "x = round(7, -10 ** 9)"),
    ("fraction-from-exponent-string", "from fractions import Fraction\n"
                                      "x = Fraction('1e1000000000')"),
    ("round-fraction-digits", "from fractions import Fraction\n"
                              "x = round(Fraction(1, 3), 10 ** 9)"),
    ("int-of-huge-decimal", "from decimal import Decimal\nx = int(Decimal('1e400000'))"),
    ("floor-of-huge-decimal", "import math\nfrom decimal import Decimal\n"
                              "x = math.floor(Decimal('1e900000'))"),
    ("fraction-times-fraction", "from fractions import Fraction\n"
                                "f = Fraction(3 ** 1000, 7 ** 1000)\n"
                                "for i in range(40):\n    f = f * f"),
    ("math-lcm", "import math\nx = 2 ** 100000 + 1\nfor i in range(40):\n"
                 "    x = math.lcm(x, x + 2)"),
    ("random-sample", "import random\nx = random.sample(range(10 ** 12), 10 ** 9)"),
    ("str-join", "x = ('a' * 1000000).join(['b'] * 1000)"),
    ("str-ljust", "x = 'a'.ljust(10 ** 9)"),
    ("str-center", "x = 'a'.center(10 ** 9)"),
    ("str-zfill", "x = '1'.zfill(10 ** 9)"),
    ("str-expandtabs", "x = ('\\t' * 1000).expandtabs(10 ** 6)"),
    ("format-width", "x = '{:1000000000}'.format(1)"),
    ("fstring-width", "w = 10 ** 9\nx = f'{1:{w}}'"),
    ("percent-width", "x = '%1000000000d' % 1"),
    ("percent-star-width", "x = '%*d' % (10 ** 9, 1)"),
    ("int-to-bytes", "x = (1).to_bytes(10 ** 9, 'big')"),
    ("bytes-of-n", "x = bytes(10 ** 9)"),
    ("json-indent", "import json\nx = json.dumps([[1]] * 1000, indent=10 ** 6)"),
    ("nested-map-objects", "m = [1]\nfor i in range(1000000):\n    m = map(abs, m)\nx = list(m)"),
    ("nested-filter-zip", "m = [1]\nfor i in range(1000000):\n    m = zip(filter(None, m))\n"
                          "x = list(m)"),
    ("nested-itertools", "import itertools\nm = [1]\nfor i in range(1000000):\n"
                         "    m = itertools.islice(m, 5)\nx = list(m)"),
]

# A 1,000,000-deep tuple: hash() recursed on the C stack (a segfault).
DEEP_TUPLE = ("tuple-depth-hash", "t = ()\nfor i in range(1000000):\n    t = (t,)\nx = hash(t)")
SIZE_SIDE_DOORS.append(DEEP_TUPLE)

#: Deep tuples used where CPython hashes them natively (a set member, a dict key): each is
#: refused when the nesting is built, whichever way it is built.
DEEP_TUPLES_HASHED = [
    ("display-in-set", "t = ()\nfor i in range(1000000):\n    t = (t, i)\nx = {t}"),
    ("display-as-dict-key", "t = ()\nfor i in range(1000000):\n    t = (t,)\nx = {t: 1}"),
    ("varargs", "def pack(*a):\n    return a\nt = ()\nfor i in range(1000000):\n"
                "    t = pack(t)\nx = {t}"),
    ("varargs-docstring", "def pack(*a):\n    'doc'\n    return a\nt = ()\n"
                          "for i in range(1000000):\n    t = pack(t, i)\nx = {t}"),
    ("lambda-varargs", "pack = lambda *a: a\nt = ()\nfor i in range(1000000):\n"
                       "    t = pack(t)\nx = set([t])"),
    ("tuple-constructor", "t = ()\nfor i in range(1000000):\n    t = tuple([t])\nx = {t}"),
]
SIZE_SIDE_DOORS.extend(DEEP_TUPLES_HASHED)

#: Tuples nested deeper than the C stack allows, built by C functions that store their argument
#: in a new tuple (no guard sees the nesting), then hashed natively: CPython's tuple hash
#: recurses on the C stack without a check (64 bytes of stack per level on 3.11; an 8 MB stack
#: overflows at ~131,000 levels). In-process this is a segmentation fault of the caller
#: (``run_restricted`` in-process is documented as not crash-safe), so these run only through
#: the sandbox, where the worker's main-thread stack is larger than its memory limit: the
#: recursion ends as the memory limit (memory_mb), never as SIGSEGV. ``{depth}`` is filled in.
DEEP_C_RECURSION = [
    ("exception-args-in-set", "t = ()\nfor i in range({depth}):\n    t = ValueError(t).args\n"
                              "x = {{t}}"),
    ("popitem-as-dict-key", "t = ()\nfor i in range({depth}):\n    t = {{0: t}}.popitem()\n"
                            "x = {{t: 1}}"),
    ("dict-items-in-frozenset", "t = ()\nfor i in range({depth}):\n"
                                "    t = list({{0: t}}.items())[0]\nx = frozenset([t])"),
    ("enumerate-item-membership", "t = ()\nfor i in range({depth}):\n"
                                  "    t = next(enumerate([t]))\nx = t in {{1, 2}}"),
    ("zip-item-in-set", "t = ()\nfor i in range({depth}):\n    t = next(zip([t]))\nx = {{t}}"),
    ("itertools-product-dict-key", "import itertools\nt = ()\nfor i in range({depth}):\n"
                                   "    t = next(itertools.product([t]))\nx = {{t: 1}}"),
    ("lru-cache-key", "import functools\nt = ()\nfor i in range({depth}):\n"
                      "    t = ValueError(t).args\nf = functools.lru_cache(None)(len)\n"
                      "x = f(t)"),
]
