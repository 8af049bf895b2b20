"""Process sandbox latency and throughput, against a plain subprocess baseline (same run).

    python benchmarks/bench_process.py [--n 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ameasure, fmt, measure, print_table, row
from agenticraft.sandbox import SandboxManager
from agenticraft.security import SecurityContext
from agenticraft.security.config import Settings
from agenticraft.security.policy import Policy

CODE = "result = sum([1, 2, 3, 4, 5])"


async def main(n: int) -> None:
    tmp = Path(tempfile.mkdtemp())
    manager = SandboxManager(policy=Policy(), settings=Settings(audit_log_path=tmp / "a"),
                             audit_log=tmp / "audit.jsonl")
    sandbox = await manager.get_sandbox("process")
    ctx = SecurityContext("bench")

    async def via_manager() -> None:
        result = await sandbox.execute_code(CODE, ctx)
        assert result["result"] == 15

    effective = manager.authorize(ctx, "execute", sandbox_type="process")
    profile = sandbox.profile_for(effective)
    sup = sandbox.supervisor

    async def fresh_fork(pool: bool = True) -> None:
        """A profile with no confined worker ready: a blank child (forked, in its cgroup
        unit) confines itself for it; ``pool=False`` forks and joins the unit on the path."""
        handle = await sup.spawn(profile, prefork=False, pool=pool)
        await sup.run(handle, CODE, effective.resource_limits)
        sup.release(handle)

    async def preforked() -> None:
        handle = await sup.spawn(profile, prefork=True)
        await sup.run(handle, CODE, effective.resource_limits)
        sup.release(handle)

    baseline = measure(lambda: subprocess.run([sys.executable, "-c", CODE], check=True),
                       max(20, n // 5))
    manager_samples = await ameasure(via_manager, n)
    fresh, unpooled = [], []
    for _ in range(max(20, n // 2)):  # interleaved, so both see the same load
        for samples, pool in ((fresh, True), (unpooled, False)):
            await asyncio.sleep(0.03)  # the blank is refilled in between
            start = time.perf_counter()
            await fresh_fork(pool)
            samples.append(time.perf_counter() - start)
    pre = await ameasure(preforked, n)
    warm = []
    for _ in range(max(20, n // 4)):  # one call at a time, the pool refilled in between
        await asyncio.sleep(0.03)
        start = time.perf_counter()
        await preforked()
        warm.append(time.perf_counter() - start)

    session = sandbox.session(ctx)
    await session.start()
    tiny = await ameasure(lambda: session.run("x = 1"), n)
    await session.close()

    small_session = sandbox.session(SecurityContext("bench", resource_limits={"memory_mb": 1024}))
    big_session = sandbox.session(SecurityContext("bench", resource_limits={"memory_mb": 1024}))
    await big_session.run("big = bytearray(200 * 1024 * 1024)")
    await small_session.run("small = 1")
    small_cost = await ameasure(lambda: small_session.run("pass"), max(20, n // 4))
    big_cost = await ameasure(lambda: big_session.run("pass"), max(20, n // 4))
    await big_session.close()
    await small_session.close()

    rows = [
        row("subprocess.run([python, -c, ...]) (baseline)", baseline, baseline),
        row("SandboxManager execute_code (audited, pre-forked)", manager_samples, baseline,
            "p50 <= 3 ms, ratio <= 0.25"),
        row("supervisor run, fresh: fork + join unit + confinement (no pool)", unpooled,
            baseline),
        row("supervisor run, fresh: blank child (unit joined) + confinement", fresh, baseline),
        row("supervisor run, pre-forked, back to back", pre, baseline),
        row("supervisor run, pre-forked, pool ready (30 ms apart)", warm, baseline,
            "p50 <= 1 ms"),
        row("session.run('x = 1') (checkpoint fork)", tiny, baseline, "p50 <= 2 ms"),
        row("session.run('pass'), small session", small_cost, baseline),
        row("session.run('pass'), 200 MB live data", big_cost, baseline),
    ]
    print_table(f"Process sandbox, n={n} (ratio = p50 / baseline p50)", rows)
    print(f"checkpoint cost of 200 MB live data: "
          f"{fmt(statistics.median(big_cost) - statistics.median(small_cost))} per run")

    for callers in (1, 8):
        per = max(10, n // callers)

        async def caller(per: int = per) -> None:
            for _ in range(per):
                await via_manager()

        start = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        elapsed = time.perf_counter() - start
        print(f"{callers} concurrent caller(s): {callers * per / elapsed:.0f} executions/s")
    await manager.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200)
    asyncio.run(main(parser.parse_args().n))
