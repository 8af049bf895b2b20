"""Container sandbox: an execution in a warm container (a fork of the zygote inside it) vs a
fresh `docker run` per execution (what a container sandbox without a warm zygote costs) vs the
process sandbox; and how long a warm container takes to start. All in the same run.

    python benchmarks/bench_container.py [--n 100] [--starts 5]

Needs a running engine and the default image (scripts/build-container-image.sh).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ameasure, fmt, measure, print_table, row
from agenticraft.sandbox import SandboxManager
from agenticraft.sandbox.container import ContainerSandbox
from agenticraft.security import SecurityContext
from agenticraft.security.config import Settings
from agenticraft.security.policy import Policy, default_container_image

CODE = "result = sum([1, 2, 3, 4, 5])"


def manager(tmp: Path) -> SandboxManager:
    return SandboxManager(policy=Policy(), settings=Settings(audit_log_path=tmp / "a"),
                          audit_log=tmp / "audit.jsonl", working_dir=tmp)


async def main(n: int, starts: int) -> None:
    tmp = Path(tempfile.mkdtemp())
    mgr = manager(tmp)
    ctx = SecurityContext("bench")
    process = await mgr.get_sandbox("process")
    container = await mgr.get_sandbox("container")
    assert isinstance(container, ContainerSandbox)
    image = default_container_image()

    async def in_process() -> None:
        assert (await process.execute_code(CODE, ctx))["result"] == 15

    async def in_container() -> None:
        assert (await container.execute_code(CODE, ctx))["result"] == 15

    session = container.session(ctx)
    await session.start()

    async def in_container_session() -> None:
        assert (await session.run(CODE)).success  # (a session reports changed values only)

    client = container.client

    def docker_run() -> None:
        out = client.containers.run(image, ["python3", "-I", "-c", f"{CODE}; print(result)"],
                                    remove=True, network_mode="none", mem_limit="640m",
                                    pids_limit=48, cap_drop=["ALL"], read_only=True,
                                    security_opt=["no-new-privileges:true"])
        assert out.strip() == b"15"

    process_samples = await ameasure(in_process, n)
    container_samples = await ameasure(in_container, n)
    session_samples = await ameasure(in_container_session, n)
    fresh_samples = measure(docker_run, max(5, n // 10), warmup=1)
    await session.close()

    # Start-up: a new profile (memory limit) is a new warm container; time to its first result.
    start_samples, zygote_samples = [], []
    for i in range(starts):
        other = SecurityContext("bench", resource_limits={"memory_mb": 300 + i})
        began = time.perf_counter()
        assert (await container.execute_code(CODE, other))["result"] == 15
        start_samples.append(time.perf_counter() - began)
        sup = await container.supervisor_for(mgr.authorize(other, "execute"))
        zygote_samples.append(sup.zygote.started_in)
    await mgr.close()

    print_table(f"Container sandbox (n={n}; ratio = p50 / warm container p50)", [
        row("warm container, one-shot execute_code", container_samples, container_samples,
            "milliseconds"),
        row("warm container, session run", session_samples, container_samples),
        row("process sandbox, one-shot execute_code", process_samples, container_samples),
        row("fresh `docker run` per execution", fresh_samples, container_samples),
    ])
    print_table(f"Container start-up (n={starts})", [
        row("new profile: container start + first result", start_samples),
        row("  of which container start to zygote hello", zygote_samples),
    ])
    speedup = statistics.median(fresh_samples) / statistics.median(container_samples)
    print(f"\nwarm container is {speedup:.0f}x faster than a fresh docker run "
          f"(p50 {fmt(statistics.median(container_samples))} vs "
          f"{fmt(statistics.median(fresh_samples))})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--starts", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.n, args.starts))
