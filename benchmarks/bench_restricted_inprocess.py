"""In-process speed of the restricted sandbox against plain ``exec`` and raw RestrictedPython.

Each case is run N times by each implementation, interleaved in the same process, and the table
shows the median and p95 per run plus the median ratio against plain ``exec``:

* ``plain exec``: ``exec`` of a pre-compiled code object in fresh globals (the floor);
* ``RestrictedPython``: ``compile_restricted`` once, then ``exec`` with ``safe_globals`` plus
  the minimal hooks its generated code needs (``_getiter_``, ``_inplacevar_`` ...);
* ``agenticraft``: the full ``run_restricted`` call (cached compile, fresh globals, context,
  recursion limit, result collection), i.e. what a caller pays per run.

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/bench_restricted_inprocess.py [--scale 0.2]
"""

from __future__ import annotations

import argparse
import gc
import operator
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from RestrictedPython import compile_restricted, safe_builtins
from RestrictedPython.Guards import guarded_iter_unpack_sequence, guarded_unpack_sequence
from RestrictedPython.PrintCollector import PrintCollector

from agenticraft.jail.restricted import run_restricted
from agenticraft.jail.restricted.compiler import clear_cache, compile_restricted_code
from agenticraft.wire.limits import ResourceLimits


@dataclass(frozen=True)
class Case:
    name: str
    source: str
    runs: int


CASES = [
    Case("call: result = sum([1,2,3,4,5])", "result = sum([1,2,3,4,5])", 5000),
    Case("loop: 1e6 x total += i", "total = 0\nfor i in range(1000000):\n    total += i\n", 15),
    Case("fib(22), recursive",
         "def fib(n):\n    return n if n < 2 else fib(n-1)+fib(n-2)\nresult = fib(22)\n", 15),
    Case("methods: 2e5 x list.append + dict.get",
         "out = []\nd = {}\nfor i in range(200000):\n    out.append(d.get(i, i))\n", 15),
    Case("objects: 5e4 x class + attrs",
         "class P:\n    def __init__(self, x):\n        self.x = x\n    def dbl(self):\n"
         "        return self.x * 2\ntotal = 0\nfor i in range(50000):\n"
         "    total += P(i).dbl()\n", 15),
    Case("arith: 2e5 x a * b (guarded *)",
         "t = 0\nfor i in range(200000):\n    j = i + 1\n    t += i * j\n", 15),
]

_INPLACE = {"+=": operator.iadd, "-=": operator.isub, "*=": operator.imul,
            "/=": operator.itruediv, "//=": operator.ifloordiv, "%=": operator.imod,
            "**=": operator.ipow, "<<=": operator.ilshift, ">>=": operator.irshift,
            "|=": operator.ior, "^=": operator.ixor, "&=": operator.iand}

_RP_BUILTINS = dict(safe_builtins, sum=sum, list=list, dict=dict, range=range)
_RP_GLOBALS = {
    "__builtins__": _RP_BUILTINS,
    "__name__": "__main__",
    "__metaclass__": type,
    "_getiter_": iter,
    "_getitem_": operator.getitem,
    "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
    "_unpack_sequence_": guarded_unpack_sequence,
    # full_write_guard refuses `self.x = ...` on plain classes: use a permissive hook, as a
    # RestrictedPython integration that wants ordinary classes to work would.
    "_write_": lambda ob: ob,
    "_inplacevar_": lambda op, x, y: _INPLACE[op](x, y),
    "_print_": PrintCollector,
}
_LIMITS = ResourceLimits()


def _sink(_text: str) -> None:
    pass


def implementations(source: str) -> dict[str, Callable[[], Any]]:
    plain_code = compile(source, "<plain>", "exec")
    rp_code = compile_restricted(source, "<rp>", "exec")
    compile_restricted_code(source)  # warm our cache: the per-run cost is what we measure
    return {
        "plain exec": lambda: exec(plain_code, {}),
        "RestrictedPython": lambda: exec(rp_code, dict(_RP_GLOBALS)),
        "agenticraft": lambda: run_restricted(source, _LIMITS, write=_sink),
    }


def measure(case: Case, scale: float) -> dict[str, list[float]]:
    impls = implementations(case.source)
    runs = max(5, int(case.runs * scale))
    times: dict[str, list[float]] = {name: [] for name in impls}
    for function in impls.values():  # warm-up
        function()
    gc.collect()
    for _ in range(runs):
        for name, function in impls.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return times


def _fmt(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:8.1f} us"
    return f"{seconds * 1e3:8.2f} ms"


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def cold_compile_cost(source: str, repeat: int = 50) -> float:
    samples = []
    for _ in range(repeat):
        clear_cache()
        start = time.perf_counter()
        compile_restricted_code(source)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply the number of runs per case (default 1.0)")
    args = parser.parse_args()
    print(f"Python {platform.python_version()} ({platform.python_implementation()}), "
          f"{platform.machine()}")
    header = f"{'case':40} {'implementation':18} {'median':>11} {'p95':>11} {'x plain':>8}"
    print(header)
    print("-" * len(header))
    for case in CASES:
        times = measure(case, args.scale)
        base = statistics.median(times["plain exec"])
        for name, values in times.items():
            median = statistics.median(values)
            print(f"{case.name:40} {name:18} {_fmt(median)} {_fmt(p95(values))} "
                  f"{median / base:7.2f}x")
        print()
    fib = CASES[2].source
    print(f"first (uncached) compile of the fib program: {_fmt(cold_compile_cost(fib))}")


if __name__ == "__main__":
    main()
