"""Agent.execute_secure latency for both sandbox types, sequential and with 8 concurrent callers,
against the sandbox's own audited ``execute_code`` (same manager, same run) as the baseline.

    python benchmarks/bench_agent.py [--n 200]

The agent path adds: resolving the caller's user_context, merging the agent's limit requests,
``SandboxManager.authorize`` (policy + one audit record), and the hop to the engine loop.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ameasure, fmt, percentile, print_table, row
from agenticraft import Agent
from agenticraft.agents.tools.runtime import close_manager
from agenticraft.sandbox import SandboxManager
from agenticraft.security import SecurityContext
from agenticraft.security.config import Settings
from agenticraft.security.policy import Policy

CODE = "result = sum([1, 2, 3, 4, 5])"
CALLERS = 8


async def concurrent(call: Callable[[int], Awaitable[object]], per_caller: int,
                     callers: int = CALLERS) -> tuple[list[float], float]:
    """Per-call latencies of ``callers`` tasks each making ``per_caller`` calls; and calls/s."""
    samples: list[float] = []

    async def caller(i: int) -> None:
        for _ in range(per_caller):
            start = time.perf_counter()
            await call(i)
            samples.append(time.perf_counter() - start)

    await asyncio.gather(*[call(i) for i in range(callers)])  # warm a worker per caller
    started = time.perf_counter()
    await asyncio.gather(*[caller(i) for i in range(callers)])
    return samples, len(samples) / (time.perf_counter() - started)


async def main(n: int) -> None:
    tmp = Path(tempfile.mkdtemp())
    manager = SandboxManager(policy=Policy(), settings=Settings(audit_log_path=tmp / "a"),
                             audit_log=tmp / "audit.jsonl", working_dir=tmp)
    rows, throughput = [], []
    try:
        for kind in ("restricted", "process"):
            agent = Agent(name="bench", sandbox_type=kind, memory_limit=256, cpu_limit=100,
                          manager=manager)
            await agent.execute_secure(CODE, {"user_id": "bench"})  # start the sandbox
            sandbox = await manager.get_sandbox(kind)
            contexts = [SecurityContext(f"bench{i}", resource_limits={"memory_mb": 256,
                                                                      "cpu_percent": 100})
                        for i in range(CALLERS)]

            async def direct(i: int = 0, sandbox=sandbox, contexts=contexts) -> None:
                assert (await sandbox.execute_code(CODE, contexts[i]))["result"] == 15

            async def via_agent(i: int = 0, agent=agent) -> None:
                result = await agent.execute_secure(CODE, {"user_id": f"bench{i}"})
                assert result["result"] == 15

            base = await ameasure(direct, n)
            seq = await ameasure(via_agent, n)
            rows.append(row(f"{kind}: sandbox.execute_code (baseline)", base, base))
            rows.append(row(f"{kind}: Agent.execute_secure", seq, base,
                            "p50 <= baseline + 1 ms"))
            per = max(5, n // CALLERS)
            cbase, cbase_rate = await concurrent(direct, per)
            conc, conc_rate = await concurrent(via_agent, per)
            rows.append(row(f"{kind}: execute_code x{CALLERS} concurrent (baseline)", cbase,
                            cbase))
            rows.append(row(f"{kind}: Agent.execute_secure x{CALLERS} concurrent", conc, cbase))
            for label, samples, rate in (("execute_code", cbase, cbase_rate),
                                         ("Agent.execute_secure", conc, conc_rate)):
                throughput.append((f"{kind}: {label}, {CALLERS} callers", f"{rate:.0f}",
                                   fmt(statistics.median(samples)),
                                   fmt(percentile(samples, 0.95))))
    finally:
        await asyncio.to_thread(close_manager, manager)
    print_table(f"Agent.execute_secure latency (n={n} sequential, {CALLERS} concurrent callers)",
                rows)
    print_table("Throughput with concurrent callers", throughput,
                header=("case", "calls/s", "p50", "p95"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=200)
    asyncio.run(main(parser.parse_args().n))
