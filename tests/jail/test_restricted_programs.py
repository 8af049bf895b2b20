"""Ordinary programs run unchanged in the restricted sandbox and give the values Python gives."""

from __future__ import annotations

import pytest

from agenticraft.jail.restricted import (
    SAFE_MODULES,
    compile_restricted_code,
    run_restricted,
)
from agenticraft.jail.restricted.compiler import CACHE_SIZE, clear_cache
from agenticraft.wire.errors import SecurityViolation
from agenticraft.wire.limits import ResourceLimits

LIMITS = ResourceLimits(memory_mb=256, max_output_bytes=100_000)


def run(source: str, imports: frozenset[str] = frozenset()) -> tuple[dict, str]:
    out: list[str] = []
    result = run_restricted(source, LIMITS, write=out.append, allowed_imports=imports)
    return result, "".join(out)


def plain(source: str) -> dict:
    """What CPython itself computes (user-visible names only)."""
    namespace: dict = {"__name__": "__main__"}
    exec(source, namespace)
    return {k: v for k, v in namespace.items()
            if not k.startswith("_") and not callable(v) and type(v).__name__ != "module"}


PROGRAMS = {
    "classes_methods": """
class Account:
    def __init__(self, owner, balance=0):
        self.owner = owner
        self.balance = balance
        self.history = []
    def deposit(self, amount):
        self.balance += amount
        self.history.append(('deposit', amount))
        return self.balance
acct = Account('ann')
acct.deposit(10)
acct.deposit(5)
balance = acct.balance
history = acct.history
owner = acct.owner
""",
    "inheritance_super": """
class Shape:
    sides = 0
    def __init__(self, name):
        self.name = name
    def describe(self):
        return f'{self.name} with {self.sides} sides'
class Square(Shape):
    sides = 4
    def __init__(self, size):
        super().__init__('square')
        self.size = size
    def area(self):
        return self.size ** 2
class Cube(Square):
    def __init__(self, size):
        Square.__init__(self, size)
    def area(self):
        return 6 * super().area()
c = Cube(3)
text = c.describe()
area = c.area()
flags = [isinstance(c, Shape), issubclass(Cube, Square)]
""",
    "properties_static_class_methods": """
class Temp:
    scale = 'C'
    def __init__(self, c):
        self._c = 0
        self.c = c
    @property
    def f(self):
        return self.c * 9 / 5 + 32
    @staticmethod
    def zero():
        return Temp(0)
    @classmethod
    def unit(cls):
        return cls.scale
t = Temp(100)
f = t.f
z = Temp.zero().c
unit = Temp.unit()
""".replace("self._c = 0\n        ", ""),
    "property_setter": """
class Box:
    def __init__(self):
        self.items = []
    @property
    def size(self):
        return len(self.items)
    @size.setter
    def size(self, n):
        self.items = [0] * n
b = Box()
b.size = 3
size = b.size
""",
    "dunder_methods": """
class Vec:
    def __init__(self, x, y):
        self.x, self.y = x, y
    def __add__(self, other):
        return Vec(self.x + other.x, self.y + other.y)
    def __mul__(self, k):
        return Vec(self.x * k, self.y * k)
    def __eq__(self, other):
        return (self.x, self.y) == (other.x, other.y)
    def __hash__(self):
        return hash((self.x, self.y))
    def __repr__(self):
        return f'Vec({self.x}, {self.y})'
    def __len__(self):
        return 2
    def __iter__(self):
        return iter([self.x, self.y])
    def __getitem__(self, i):
        return [self.x, self.y][i]
v = Vec(1, 2) + Vec(3, 4) * 2
text = repr(v)
same = v == Vec(7, 10)
n = len(v)
parts = list(v)
first = v[0]
unique = len({Vec(1, 1), Vec(1, 1)})
""",
    "classmethod_named_register": """
class Registry:
    items = []
    @classmethod
    def register(cls, item):
        cls.items.append(item)
        return item
Registry.register('a')
registered = list(Registry.items)
""",
    "class_attribute_write": """
class Counter:
    count = 0
    def __init__(self):
        Counter.count += 1
a, b = Counter(), Counter()
count = Counter.count
""",
    "closures_nonlocal": """
def make_counter():
    n = 0
    def inc(step=1):
        nonlocal n
        n += step
        return n
    return inc
c = make_counter()
c(); c(); last = c(5)
""",
    "global_statement": """
total = 0
def add(x):
    global total
    total += x
for i in range(5):
    add(i)
""",
    "generators": """
def squares(n):
    for i in range(n):
        yield i * i
def evens():
    yield from [0, 2, 4]
g = squares(5)
first = next(g)
rest = list(g)
ev = list(evens())
total = sum(x for x in range(10) if x % 2)
""",
    "comprehensions": """
words = ['apple', 'bob', 'civic', 'dog']
lengths = [len(w) for w in words]
index = {w: i for i, w in enumerate(words)}
letters = {c for w in words for c in w if c in 'aeiou'}
pairs = [(a, b) for a in range(3) for b in range(a)]
nested = [[j for j in range(i)] for i in range(4)]
pal = [w for w in words if w == w[::-1]]
""",
    "fstrings": """
name = 'World'
pi = 3.14159
items = [1, 2]
s1 = f'Hello, {name}!'
s2 = f'{pi:.2f} {pi:>10.3f} {42:05d} {255:#x} {1234567:,}'
s3 = f'{items!r} {name!s:>7} {name.upper()}'
s4 = f'{"nested " + name}'
""",
    "str_format_safe_fields": """
a = '{} + {} = {}'.format(1, 2, 3)
b = '{name} is {age:>3}'.format(name='ann', age=7)
c = '{0[0]} {0[1]}'.format(['x', 'y'])
d = '{k}'.format_map({'k': 'v'})
e = '{:{w}}|'.format('x', w=4)
f = '%s has %d items' % ('cart', 3)
""",
    "try_except_finally": """
log = []
def risky(x):
    try:
        log.append('try')
        return 10 / x
    except ZeroDivisionError as e:
        log.append('except')
        return None
    else:
        log.append('never')
    finally:
        log.append('finally')
r1 = risky(2)
r2 = risky(0)
class MyError(ValueError):
    pass
names = (risky.__name__, MyError.__name__, MyError.__qualname__, len.__name__)
try:
    raise MyError('custom')
except ValueError as err:
    caught = str(err)
    args = err.args
try:
    {}['missing']
except KeyError:
    missing = True
try:
    [].pop()
except (IndexError, TypeError) as e:
    pop_error = str(e)
""",
    "lambdas_sorted": """
people = [('ann', 31), ('bob', 25), ('cy', 35)]
by_age = sorted(people, key=lambda p: p[1])
by_name_desc = sorted(people, key=lambda p: p[0], reverse=True)
oldest = max(people, key=lambda p: p[1])[0]
adults = list(filter(lambda p: p[1] > 30, people))
names = list(map(lambda p: p[0].title(), people))
""",
    "dict_list_methods": """
d = {'a': 1}
d['b'] = 2
d.update({'c': 3})
got = d.get('z', 0)
popped = d.pop('a')
keys = sorted(d.keys())
items = sorted(d.items())
d.setdefault('e', []).append(1)
lst = [3, 1, 2]
lst.append(4)
lst.extend([5])
lst.insert(0, 0)
lst.sort()
last = lst.pop()
lst.remove(0)
idx = lst.index(3)
del lst[0]
lst[0] = 99
lst[1:2] = [7, 8]
counts = {}
for ch in 'hello':
    counts[ch] = counts.get(ch, 0) + 1
counts['h'] += 10
s = set([1, 2])
s.add(3)
s.discard(1)
s_sorted = sorted(s)
""",
    "string_methods": """
text = '  Hello, World  '
stripped = text.strip()
parts = stripped.split(', ')
joined = '-'.join(parts)
upper = stripped.upper()
replaced = stripped.replace('World', 'Sandbox')
starts = stripped.startswith('Hello')
ends = stripped.endswith('!')
found = stripped.find('World')
title = 'the end'.title()
count = 'banana'.count('a')
centered = 'x'.center(5, '*')
lines = 'a\\nb'.splitlines()
""",
    "builtins": """
values = [3, -1, 4, 1, -5]
r = [abs(-3), all(values), any([0, 1]), ascii('é'), bin(5), bool(0), callable(len)]
r += [chr(65), complex(1, 2), divmod(7, 2), float('1.5'), frozenset([1]) == {1}]
r += [hex(255), int('42'), len(values), max(values), min(values), oct(8), ord('A')]
r += [pow(2, 10), pow(3, 4, 5), list(range(3)), repr('x'), list(reversed([1, 2])), round(2.567, 2)]
r += [sorted(values), str(5), sum(values), tuple([1]), list(zip('ab', [1, 2]))]
r += [list(enumerate('ab')), isinstance(1, int), issubclass(bool, int), hash(1) == hash(1)]
r += [bytes([65, 66]), dict(a=1), next(iter([9])), slice(1, 2).start, hasattr('', 'upper')]
r += [getattr('abc', 'upper')(), getattr(1, 'missing', 'default')]
""",
    "tuple_unpacking_star_args": """
a, b = 1, 2
a, b = b, a
(x, (y, z)) = (1, (2, 3))
first, *middle, last = range(6)
for i, (k, v) in enumerate({'p': 1}.items()):
    pair = (i, k, v)
def f(*args, **kwargs):
    return args, kwargs
call = f(*[1, 2], 3, **{'x': 4}, y=5)
def g(a, b=2, *, c=3):
    return a + b + c
kw = g(1, c=10)
merged = {**{'a': 1}, **{'b': 2}}
spread = [*range(3), *'ab']
""",
    "walrus_conditional_loops": """
data = [1, 5, 12, 3]
big = [y for x in data if (y := x * 2) > 5]
n = 0
while n < 10:
    n += 3
    if n == 6:
        continue
else:
    done = True
for i in range(10):
    if i == 4:
        break
result = 'even' if n % 2 == 0 else 'odd'
""",
    "numbers": """
a = 2 ** 100
b = 7 // 2, 7 % 3, -7 // 2, 2 ** -1, 10 / 4
c = 1 << 10
d = 0.1 + 0.2
e = 3 * 'ab'
f = [0] * 3
g = (1, 2) * 2
n = 5
h = n ** 2 + n * 3 - (n << 2)
x = 3
x **= 3
x *= 2
x <<= 1
x //= 3
x -= 1
x %= 7
x |= 8
x ^= 1
x &= 15
x >>= 1
big = 10 ** 50 * 10 ** 50
""",
    "annotations_and_typing": """
count: int = 3
names: list = ['a']
def area(w: float, h: float = 1.0) -> float:
    return w * h
size = area(2.0, 3.0)
""",
    "printing": """
print('hello', 'world')
print(1, 2, sep='-', end='!\\n')
print()
def show(x):
    print('value', x)
show(42)
for i in range(2):
    print(i)
class P:
    def __init__(self):
        print('init')
P()
printed = 'ordinary variable'
""",
    "if_name_main": """
def main():
    return 'ran'
if __name__ == '__main__':
    outcome = main()
""",
    "many_names_then_import": "".join(f"v{i} = {i}\n" for i in range(300)) + "import math\n"
                              "root = math.sqrt(v299 - 43)\n",
}

PLAIN_DATA = (type(None), bool, int, float, complex, str, bytes, list, tuple, dict, set,
              frozenset)

#: Programs whose result is checked against CPython's own execution.
COMPARE_WITH_CPYTHON = [name for name in PROGRAMS
                        if name not in {"printing", "many_names_then_import", "if_name_main"}]


@pytest.mark.parametrize("name", COMPARE_WITH_CPYTHON)
def test_program_matches_cpython(name: str) -> None:
    source = PROGRAMS[name]
    result, _ = run(source)
    expected = plain(source)
    # objects of user classes differ by identity; compare their reprs for those
    for key, value in expected.items():
        assert key in result, key
        got = result[key]
        if isinstance(value, PLAIN_DATA):
            assert got == value, key
        else:  # objects of user classes, generators: same kind of object
            assert type(got).__name__ == type(value).__name__, key


def test_printing_goes_to_write_and_printed_is_ordinary() -> None:
    result, out = run(PROGRAMS["printing"])
    assert out == "hello world\n1-2!\n\nvalue 42\n0\n1\ninit\n"
    assert result == {"printed": "ordinary variable", "i": 1}


def test_if_name_main_runs() -> None:
    assert run(PROGRAMS["if_name_main"])[0] == {"outcome": "ran"}


def test_import_after_many_names() -> None:
    result, _ = run(PROGRAMS["many_names_then_import"], frozenset({"math"}))
    assert result["root"] == 16.0


def test_returned_names_skip_functions_classes_modules() -> None:
    result, _ = run("import math\nimport json as j\ndef f():\n    pass\nclass C:\n    pass\n"
                    "g = lambda: 1\nh = len\nm = [].append\nobj = C()\nvalue = 1\n",
                    frozenset({"math", "json"}))
    assert set(result) == {"obj", "value"}


SAFE_MODULE_PROGRAMS = {
    "math": ("import math\nx = (math.sqrt(16), math.floor(2.7), math.factorial(10), math.pi > 3,"
             " math.gcd(12, 18), math.comb(5, 2), math.prod([1, 2, 3]), math.isclose(1, 1.0))",
             (4.0, 2, 3628800, True, 6, 10, 6, True)),
    "statistics": ("import statistics as st\nx = (st.mean([1, 2, 3]), st.median([3, 1, 2]), "
                   "st.mode([1, 1, 2]))", (2, 2, 1)),
    "json": ("import json\nx = json.loads(json.dumps({'a': [1, 2.5, None, True]}))",
             {"a": [1, 2.5, None, True]}),
    "re": ("import re\nm = re.search(r'(\\d+)-(\\d+)', 'ab 12-34')\n"
           "x = (m.group(1), re.findall('a.', 'abacad'), re.sub('[aeiou]', '_', 'hello'), "
           "re.compile('b+').match('bbc').end(), re.split(',', 'a,b'), bool(re.I), "
           "dict(re.compile('(?P<y>\\d+)').groupindex))",
           ("12", ["ab", "ac", "ad"], "h_ll_", 2, ["a", "b"], True, {"y": 1})),
    "datetime": ("import datetime as dt\nd = dt.date(2024, 2, 28) + dt.timedelta(days=2)\n"
                 "x = (d.isoformat(), d.strftime('%Y/%m/%d'), f'{d:%d.%m}', d.weekday(), "
                 "dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc).year)",
                 ("2024-03-01", "2024/03/01", "01.03", 4, 2020)),
    "itertools": ("from itertools import chain, islice, count, combinations, groupby, product\n"
                  "x = (list(chain([1], [2])), list(islice(count(5), 3)), "
                  "len(list(combinations(range(4), 2))), [k for k, _ in groupby('aabbc')], "
                  "len(list(product('ab', repeat=2))))",
                  ([1, 2], [5, 6, 7], 6, ["a", "b", "c"], 4)),
    "functools": ("import functools\n@functools.lru_cache(maxsize=None)\ndef fib(n):\n"
                  "    return n if n < 2 else fib(n - 1) + fib(n - 2)\n"
                  "@functools.total_ordering\nclass V:\n    def __init__(self, v):\n"
                  "        self.v = v\n    def __eq__(self, o):\n        return self.v == o.v\n"
                  "    def __lt__(self, o):\n        return self.v < o.v\n"
                  "x = (functools.reduce(lambda a, b: a * b, [1, 2, 3, 4]), fib(80), "
                  "functools.partial(int, base=2)('101'), V(2) >= V(1), "
                  "sorted([3, 1, 2], key=functools.cmp_to_key(lambda a, b: b - a)))",
                  (24, 23416728348467685, 5, True, [3, 2, 1])),
    "collections": ("from collections import Counter, defaultdict, deque, namedtuple, "
                    "OrderedDict\nc = Counter('abracadabra')\nc['z'] += 1\n"
                    "dd = defaultdict(list)\ndd['k'].append(1)\nq = deque([1, 2])\n"
                    "q.appendleft(0)\nP = namedtuple('P', 'x y')\np = P(1, y=2)\n"
                    "od = OrderedDict(a=1)\nod['b'] = 2\n"
                    "x = (c.most_common(1), dict(dd), list(q), p.x + p.y, list(od))",
                    ([("a", 5)], {"k": [1]}, [0, 1, 2], 3, ["a", "b"])),
    "random": ("import random\nrandom.seed(7)\na = [random.randint(1, 100) for i in range(3)]\n"
               "random.seed(7)\nb = [random.randint(1, 100) for i in range(3)]\n"
               "r = random.Random(1)\nitems = [1, 2, 3]\nrandom.shuffle(items)\n"
               "x = (a == b, 0 <= random.random() < 1, random.choice('xyz') in 'xyz', "
               "sorted(items), len(random.sample(range(10), 3)), r.randint(1, 6) in range(1, 7))",
               (True, True, True, [1, 2, 3], 3, True)),
    "decimal": ("from decimal import Decimal, ROUND_HALF_UP\n"
                "x = (str(Decimal('0.1') + Decimal('0.2')), "
                "str(Decimal('2.675').quantize(Decimal('0.01'), rounding=ROUND_HALF_UP)))",
                ("0.3", "2.68")),
    "fractions": ("from fractions import Fraction\nx = (Fraction(1, 3) + Fraction(1, 6), "
                  "Fraction(2, 3) ** 2, Fraction(1, 2) * 4)",
                  (__import__("fractions").Fraction(1, 2), __import__("fractions").Fraction(4, 9),
                   2)),
    "string": ("import string\nx = (string.ascii_lowercase[:3], string.digits[-1], "
               "string.capwords('hi there'), string.Template('$who!').substitute(who='me'))",
               ("abc", "9", "Hi There", "me!")),
}


@pytest.mark.parametrize("module", list(SAFE_MODULE_PROGRAMS))
def test_safe_modules_work_when_allowed(module: str) -> None:
    source, expected = SAFE_MODULE_PROGRAMS[module]
    result, _ = run(source, frozenset({module}))
    assert result["x"] == expected


@pytest.mark.parametrize("module", sorted(SAFE_MODULES))
def test_safe_modules_are_refused_when_not_allowed(module: str) -> None:
    with pytest.raises(SecurityViolation):
        run(f"import {module}")


def test_random_seed_does_not_touch_the_host_generator() -> None:
    import random

    random.seed(123)
    expected = random.random()
    random.seed(123)
    run("import random\nrandom.seed(1)\nx = random.random()", frozenset({"random"}))
    assert random.random() == expected


def test_imports_inside_functions_and_from_imports() -> None:
    source = ("def f():\n    import math\n    from math import sqrt as s\n"
              "    return math.floor(s(10))\nx = f()\n")
    assert run(source, frozenset({"math"}))[0] == {"x": 3}


def test_future_import_is_accepted() -> None:
    assert run("from __future__ import annotations\nx: int = 1\n")[0] == {"x": 1}


def test_compile_cache_reuses_code_and_is_bounded() -> None:
    clear_cache()
    first = compile_restricted_code("x = 1")
    assert compile_restricted_code("x = 1") is first
    assert compile_restricted_code("x = 1", allowed_imports=frozenset({"math"})) is not first
    # an unsafe module in allowed_imports does not change what is allowed, nor the cache key
    assert compile_restricted_code("x = 1", allowed_imports=frozenset({"os"})) is first
    for i in range(CACHE_SIZE + 10):
        compile_restricted_code(f"x = {i}")
    assert compile_restricted_code("x = 1") is not first
    with pytest.raises(TypeError):
        compile_restricted_code("x = 1", allowed_imports="math")  # type: ignore[arg-type]


def test_runs_are_isolated_from_each_other() -> None:
    run("shared = 1\nclass C:\n    pass\n")
    with pytest.raises(NameError):
        run("y = shared")
