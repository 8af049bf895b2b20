"""What the undo state costs (issue 15, ``%secure_undo``): a session run with and without the
kept checkpoint (same run, interleaved), the undo itself, and the memory of the kept process.

    python benchmarks/bench_undo.py [--n 200] [--mb 100]

Time: with ``undo=True`` an accepted run stops its checkpoint (SIGSTOP) and kills the one kept
before it, instead of killing its checkpoint; the unit reserves one more process.
Memory: the kept process shares every page with the live state until one of them writes it
(copy-on-write), so what it costs is the pages the cells after it changed: nothing for a cell
that only allocates new data, everything for a cell that rewrites existing data in place. RSS
counts the shared pages in full, PSS splits them, USS is what only the kept process holds (the
real extra cost); with a memory cgroup the unit's ``memory.usage_in_bytes`` shows it too.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ameasure, print_table, row
from agenticraft.sandbox import SandboxManager
from agenticraft.security import SecurityContext
from agenticraft.security.config import Settings
from agenticraft.security.policy import Policy

MB = 1024 * 1024


def memory(pid: int) -> tuple[float, float, float]:
    """(RSS, PSS, USS) in MB of one process (the host reads it: it is root or the owner)."""
    info = psutil.Process(pid).memory_full_info()
    return info.rss / MB, info.pss / MB, info.uss / MB


async def main(n: int, mb: int) -> None:
    tmp = Path(tempfile.mkdtemp())
    manager = SandboxManager(policy=Policy(), settings=Settings(audit_log_path=tmp / "a"),
                             audit_log=tmp / "audit.jsonl")
    sandbox = await manager.get_sandbox("process")
    ctx = SecurityContext("bench", resource_limits={"memory_mb": 4 * mb + 256})
    plain = sandbox.session(ctx)
    kept = sandbox.session(ctx, undo=True)
    await plain.start()
    await kept.start()
    samples: dict[str, list[float]] = {"plain": [], "undo": []}
    for _ in range(max(1, n // 20)):  # interleaved blocks: both see the same machine state
        samples["plain"] += await ameasure(lambda: plain.run("x = 1"), 20, warmup=1)
        samples["undo"] += await ameasure(lambda: kept.run("x = 1"), 20, warmup=1)

    undo_times = []
    for i in range(max(10, n // 10)):
        await kept.run(f"x = {i}")
        started = time.perf_counter()
        await kept.undo()
        undo_times.append(time.perf_counter() - started)
    print_table(f"Session run 'x = 1', n={len(samples['plain'])} each (ratio = p50 / undo=False)",
                [row("session.run, undo=False (before issue 15's undo state)", samples["plain"]),
                 row("session.run, undo=True (keeps the state before the run)",
                     samples["undo"], samples["plain"]),
                 row("session.undo() (kill the live state, resume the kept one)", undo_times,
                     samples["plain"])])

    unit = kept.handle.unit
    rows = []
    cells = [("after `x = 1` (small session)", "x = 1"),
             (f"after a cell that allocates {mb} MB", f"data = bytearray({mb} * {MB})"),
             (f"after a cell that rewrites those {mb} MB in place",
              f"data[:] = b'x' * ({mb} * {MB})"),
             ("after a cell that allocates nothing more", "y = 2")]
    for label, code in cells:
        await kept.run(code)
        rss, pss, uss = memory(kept.handle.undo)
        live_uss = memory(kept.handle.pid)[2]
        usage = unit.memory_bytes()
        rows.append((label, f"{rss:.1f}", f"{pss:.1f}", f"{uss:.1f}", f"{live_uss:.1f}",
                     "-" if usage is None else f"{usage / MB:.1f}"))
    print_table("Memory of the kept state (MB), the state before each cell", rows,
                header=("the kept state is the one from before the cell", "kept RSS",
                        "kept PSS", "kept USS (extra)", "live USS", "unit memory"))
    await plain.close()
    await kept.close()
    await manager.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--mb", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(main(args.n, args.mb))
