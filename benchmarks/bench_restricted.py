"""Restricted sandbox: round trip through the warm worker vs plain exec (same run).

    python benchmarks/bench_restricted.py [--n 500]

The in-process cost of the policy layer alone is measured by bench_restricted_inprocess.py.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ameasure, measure, print_table, row
from agenticraft.sandbox import SandboxManager
from agenticraft.security import SecurityContext
from agenticraft.security.config import Settings
from agenticraft.security.policy import Policy

SMALL = "result = sum([1, 2, 3, 4, 5])"
LOOP = "total = 0\nfor i in range(1000000):\n    total += i"
FIB = "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\nresult = fib(22)"


async def main(n: int) -> None:
    tmp = Path(tempfile.mkdtemp())
    manager = SandboxManager(policy=Policy(), settings=Settings(audit_log_path=tmp / "a"),
                             audit_log=tmp / "audit.jsonl")
    sandbox = await manager.get_sandbox("restricted")
    request = SecurityContext("bench", resource_limits={"cpu_percent": 100})
    ctx = manager.authorize(request, "execute", sandbox_type="restricted")

    def plain(code: str) -> None:
        exec(compile(code, "<bench>", "exec"), {})

    async def worker(code: str) -> None:
        result = await sandbox.run(code, ctx, None)
        assert result.success, result.error

    async def audited(code: str) -> None:
        await sandbox.execute_code(code, request)

    rows = []
    base_small = measure(lambda: plain(SMALL), n)
    rows.append(row("plain exec, small (baseline)", base_small, base_small))
    rows.append(row("restricted worker round trip, small", await ameasure(
        lambda: worker(SMALL), n), base_small, "p50 <= 150 us"))
    rows.append(row("execute_code (authorized + audited), small", await ameasure(
        lambda: audited(SMALL), n), base_small))
    for name, code, runs in (("1,000,000-iteration loop", LOOP, 15), ("fib(22)", FIB, 15)):
        base = measure(lambda code=code: plain(code), runs, warmup=1)
        ours = await ameasure(lambda code=code: worker(code), runs, warmup=1)
        rows.append(row(f"plain exec, {name} (baseline)", base, base))
        rows.append(row(f"restricted worker, {name}", ours, base, "ratio <= 1.5"))
    print_table(f"Restricted sandbox, n={n} (ratio = p50 / plain exec p50 of the same code)",
                rows)

    for callers in (1, 8):
        per = max(20, n // callers)

        async def caller(per: int = per) -> None:
            for _ in range(per):
                await audited(SMALL)

        start = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        rate = callers * per / (time.perf_counter() - start)
        print(f"{callers} concurrent caller(s): {rate:.0f} executions/s")
    await manager.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=500)
    asyncio.run(main(parser.parse_args().n))
