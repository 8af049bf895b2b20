"""Issue 11's latency goals, before and after, in one run (interleaved rounds).

    python benchmarks/bench_latency.py [--n 20]                       # this tree only
    python benchmarks/bench_latency.py --ab OLD_TREE [--rounds 6 --n 20]

With ``--ab`` each round runs this script once against OLD_TREE (a checkout of the code before
the change, e.g. ``git archive <commit> | tar -x -C /tmp/old``) and once against this tree, in
alternation, each in a fresh process (``PYTHONPATH`` picks the tree); the table gives the
medians of all rounds' samples, so both sides saw the same machine load. Only APIs both trees
have are used. Goals: fresh <= 3 ms p50 (<= 0.25 x ``python -c``), pre-forked ready <= 1 ms,
session run <= 2 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ameasure, fmt, percentile, print_table

CODE = "result = sum([1, 2, 3, 4, 5])"
PAUSE = 0.03  # "pool ready": the next call comes this long after the last one ended
ROWS = (
    ("baseline", "subprocess.run([python, -c, ...]) (baseline)", ""),
    ("fresh_blank", "fresh: blank child (unit joined) + confinement + run", "<= 3 ms"),
    ("fresh_nopool", "fresh: fork + join unit + confinement + run (no pool)", ""),
    ("ready", "pre-forked, pool ready: ProcessSandbox.run (30 ms apart)", "<= 1 ms"),
    ("ready_sup", "pre-forked, pool ready: spawn + run + release (30 ms apart)", ""),
    ("back_to_back", "pre-forked, back to back: ProcessSandbox.run", ""),
    ("session", "session.run('x = 1'), back to back", ""),
    ("session_paced", "session.run('x = 1'), 30 ms apart (a user reading output)", "<= 2 ms"),
    ("execute_code", "SandboxManager execute_code (audited), 30 ms apart", ""),
    ("execute_code_b2b", "SandboxManager execute_code (audited), back to back", ""),
)


def idle_penalty(n: int = 100) -> tuple[float, float]:
    """(p50 back to back, p50 after ``PAUSE`` idle) of the same pure-Python work, in this
    process: the paced rows pay what this machine charges for waking from idle (on a VM whose
    idle vCPU halts: cold caches and TLBs, the host's rescheduling), whatever the code."""
    data = {"a": list(range(100)), "b": {"x": "y" * 50, "z": [1.5] * 20}}

    def work() -> float:
        start = time.perf_counter()
        for _ in range(10):
            json.dumps(data, sort_keys=True)
        return time.perf_counter() - start

    hot = [work() for _ in range(n)]
    cold = []
    for _ in range(n):
        time.sleep(PAUSE)
        cold.append(work())
    return statistics.median(hot), statistics.median(cold)


async def one_side(n: int) -> dict[str, Any]:
    from agenticraft.sandbox import SandboxManager
    from agenticraft.security import SecurityContext
    from agenticraft.security.config import Settings
    from agenticraft.security.policy import Policy

    tmp = Path(tempfile.mkdtemp())
    manager = SandboxManager(policy=Policy(), settings=Settings(audit_log_path=tmp / "a"),
                             audit_log=tmp / "audit.jsonl")
    sandbox = await manager.get_sandbox("process")
    ctx = SecurityContext("bench")
    effective = manager.authorize(ctx, "execute", sandbox_type="process")
    profile = sandbox.profile_for(effective)
    sup, limits = sandbox.supervisor, effective.resource_limits

    async def via_manager() -> None:
        result = await sandbox.execute_code(CODE, ctx)
        assert result["result"] == 15, result

    async def one_shot() -> None:
        result = await sandbox.run(CODE, effective)
        assert result["result"] == 15, result

    async def supervised(prefork: bool, pool: bool = True) -> None:
        handle = await sup.spawn(profile, prefork=prefork, pool=pool)
        outcome = await sup.run(handle, CODE, limits)
        assert outcome.frame and outcome.frame.get("ok"), outcome.frame
        sup.release(handle)

    samples: dict[str, list[float]] = {}
    start = time.perf_counter()
    for _ in range(n):
        subprocess.run([sys.executable, "-c", CODE], check=True)
    samples["baseline"] = []
    for _ in range(n):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", CODE], check=True)
        samples["baseline"].append(time.perf_counter() - start)
    samples["fresh_blank"] = await ameasure(lambda: supervised(False), n, pause=PAUSE)
    samples["fresh_nopool"] = await ameasure(lambda: supervised(False, False), n, pause=PAUSE)
    samples["ready"] = await ameasure(one_shot, n, pause=PAUSE)
    samples["ready_sup"] = await ameasure(lambda: supervised(True), n, pause=PAUSE)
    samples["back_to_back"] = await ameasure(one_shot, n, pause=0)
    session = sandbox.session(ctx)
    await session.start()
    samples["session"] = await ameasure(lambda: session.run("x = 1"), n, pause=0)
    samples["session_paced"] = await ameasure(lambda: session.run("x = 1"), n, pause=PAUSE)
    await session.close()
    samples["execute_code"] = await ameasure(via_manager, n, pause=PAUSE)
    samples["execute_code_b2b"] = await ameasure(via_manager, n, pause=0)
    await manager.close()
    import agenticraft
    return {"tree": str(Path(agenticraft.__file__).resolve().parents[1]), "samples": samples,
            "load": os.getloadavg()[0], "idle_penalty": idle_penalty()}


def run_side(tree: str, n: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": tree}
    out = subprocess.run([sys.executable, __file__, "--json", "--n", str(n)], env=env,
                         cwd=tree, check=True, capture_output=True, text=True).stdout
    data = json.loads(out.strip().splitlines()[-1])
    if Path(data["tree"]) != Path(tree).resolve():
        raise SystemExit(f"imported {data['tree']}, expected {tree}")
    return data


def table(sides: dict[str, dict[str, list[float]]], loads: list[float], n: int,
          penalties: list[tuple[float, float]]) -> None:
    names = list(sides)
    rows = []
    base = {name: statistics.median(sides[name]["baseline"]) for name in names}
    for key, label, goal in ROWS:
        cells: list[str] = [label]
        for name in names:
            values = sides[name].get(key, [])
            cells.append(f"{fmt(statistics.median(values))} (p95 {fmt(percentile(values, 0.95))},"
                         f" {statistics.median(values) / base[name]:.2f}x)" if values else "-")
        if len(names) == 2 and sides[names[0]].get(key) and sides[names[1]].get(key):
            ratio = statistics.median(sides[names[1]][key]) / statistics.median(
                sides[names[0]][key])
            cells.append(f"{ratio:.2f}")
        cells.append(goal)
        rows.append(tuple(cells))
    header = ("case", *(f"{name} p50" for name in names),
              *(("after/before",) if len(names) == 2 else ()), "goal")
    print_table(f"Latency, n={n} per round and side; load (1 min) during the run "
                f"{min(loads):.2f}-{max(loads):.2f}; (Nx) = p50 / python -c p50 of that side",
                rows, header=header)
    hot = statistics.median(p[0] for p in penalties)
    cold = statistics.median(p[1] for p in penalties)
    print(f"This machine, same run: the same pure-Python work took {fmt(cold)} "
          f"{PAUSE * 1e3:.0f} ms after idle vs {fmt(hot)} back to back ({cold / hot:.2f}x); "
          "the rows '30 ms apart' pay that on every step of the path.")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--ab", metavar="OLD_TREE")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.json:
        print(json.dumps(asyncio.run(one_side(args.n))))
        return
    here = str(Path(__file__).resolve().parents[1])
    trees = {"before": args.ab, "after": here} if args.ab else {"this tree": here}
    sides: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
    loads: list[float] = []
    penalties: list[tuple[float, float]] = []
    for round_no in range(args.rounds if args.ab else 1):
        order = list(trees.items())
        if round_no % 2:
            order.reverse()  # neither side always goes first
        for name, tree in order:
            data = run_side(tree, args.n)
            loads.append(data["load"])
            penalties.append(tuple(data["idle_penalty"]))  # type: ignore[arg-type]
            for key, values in data["samples"].items():
                sides[name].setdefault(key, []).extend(values)
        print(f"round {round_no + 1} done, load {os.getloadavg()[0]:.2f}", file=sys.stderr)
    table(sides, loads, args.n, penalties)


if __name__ == "__main__":
    main()
