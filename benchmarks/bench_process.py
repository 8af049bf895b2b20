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
from typing import Any

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

    await working_directory(n)

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


WRITE_FILES = """
import os
os.makedirs({where!r}, exist_ok=True)
for i in range({count}):
    with open(os.path.join({where!r}, f"f{{i}}.txt"), "w") as fh:
        fh.write("x" * 1024)
"""


async def working_directory(n: int) -> None:
    """A writable working directory: before (bound read-write, per-file limit only) and after
    (an overlay on the quota tmpfs, copied back by the supervisor), interleaved in one run.
    "Before" is the same profile without ``workdir``: the zygote then binds it read-write."""
    from agenticraft.sandbox.supervisor import Supervisor

    tmp, work = Path(tempfile.mkdtemp()), Path(tempfile.mkdtemp())
    manager = SandboxManager(policy=Policy(), settings=Settings(audit_log_path=tmp / "a"),
                             audit_log=tmp / "audit.jsonl", working_dir=work)
    sandbox = await manager.get_sandbox("process")
    ctx = manager.authorize(SecurityContext("bench", ["execute", "write"],
                                            {"filesystem_access": True}, working_dir=str(work)),
                            "execute", sandbox_type="process")
    after = sandbox.profile_for(ctx)
    before = {**after, "workdir": None}
    sup, limits = sandbox.supervisor, ctx.resource_limits
    copy_back: list[float] = []
    timed = Supervisor._write_back

    def timing(handle: Any, outcome: Any) -> None:
        start = time.perf_counter()
        timed(handle, outcome)
        copy_back.append(time.perf_counter() - start)

    Supervisor._write_back = staticmethod(timing)  # type: ignore[method-assign]

    async def fresh(profile: dict[str, Any], code: str) -> None:
        handle = await sup.spawn(profile, prefork=False)
        outcome = await sup.run(handle, code, limits)
        assert outcome.frame and outcome.frame.get("ok"), outcome.frame
        sup.release(handle)

    async def ab(make: Any, count: int) -> tuple[list[float], list[float]]:
        old: list[float] = []
        new: list[float] = []
        for _ in range(3):
            await make(before)
            await make(after)
        for _ in range(count):
            for profile, samples in ((before, old), (after, new)):
                start = time.perf_counter()
                await make(profile)
                samples.append(time.perf_counter() - start)
        return old, new

    rows = []
    old, new = await ab(lambda p: fresh(p, CODE), max(20, n // 2))
    rows += [row("fresh run, writable workdir: rw bind (before)", old, old),
             row("fresh run, writable workdir: overlay (after)", new, old)]
    for files in (100, 1000):
        code = WRITE_FILES.format(where=str(work / "out"), count=files)
        old, new = await ab(lambda p, code=code: fresh(p, code), max(10, n // 10))
        rows += [row(f"fresh run writing {files} x 1 KB: rw bind (before)", old, old),
                 row(f"fresh run writing {files} x 1 KB: overlay + copy-back", new, old)]
    sessions = {}
    for name, profile in (("before", before), ("after", after)):
        handle = await sup.spawn(profile, prefork=False, session=True)
        sessions[name] = handle

    async def cell(profile: dict[str, Any]) -> None:
        handle = sessions["before" if profile is before else "after"]
        outcome = await sup.run(handle, "x = 1", limits, checkpoint=True)
        assert outcome.frame and outcome.frame.get("ok"), outcome.frame

    old, new = await ab(cell, n)
    rows += [row("session cell 'x = 1': rw bind (before)", old, old),
             row("session cell 'x = 1': overlay (after)", new, old)]
    # The overlay renewed before every cell (the keeper mounts a fresh one: host renames show)
    # against the same overlay kept for the whole session (the code before renewals: a handle
    # whose overlays have no keeper), interleaved in one run.
    kept = await sup.spawn(after, prefork=False, session=True)
    for overlay in kept.overlays:
        overlay.keeper = None
    renewed = sessions["after"]
    sessions.update(before=kept, after=renewed)
    old, new = await ab(cell, n)
    rows += [row("session cell 'x = 1': overlay kept all session (before)", old, old),
             row("session cell 'x = 1': overlay renewed per cell (after)", new, old)]
    renewals = []
    for _ in range(max(20, n // 4)):
        start = time.perf_counter()
        assert Supervisor._renew(renewed)
        renewals.append(time.perf_counter() - start)
    rows.append(row("renewing the overlay alone (keeper round trip + mounts)", renewals))
    sup.discard(kept)
    for handle in (renewed,):
        sup.discard(handle)
    copy_back.clear()
    for files in (100, 1000):
        samples = []
        for i in range(max(5, n // 20)):
            code = WRITE_FILES.format(where=str(work / f"s{files}-{i}"), count=files)
            await fresh(after, code)
            samples.append(copy_back[-1])
        rows.append(row(f"copy-back alone, {files} new x 1 KB files", samples))
    Supervisor._write_back = staticmethod(timed)  # type: ignore[method-assign]
    print_table("Writable working directory (same run, interleaved; ratio = p50 / before p50)",
                rows)
    await manager.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200)
    asyncio.run(main(parser.parse_args().n))
