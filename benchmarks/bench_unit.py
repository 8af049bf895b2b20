"""What the accounting unit costs (issue 12): creating and joining a worker's cgroups, and the
supervisor's per-run bookkeeping on a session's unit, against a bare fork (same run).

    python benchmarks/bench_unit.py [--n 200]

(As root on a hybrid host, started inside a delegated v2 group with AGENTICRAFT_DISABLE=cgroup_v1,
it measures the cgroup v2 unit instead.)

Creating and joining the unit happens in the worker before it confines itself; the zygote
keeps a blank child forked and already in its unit, so a fresh worker only writes its limits
(the "pre-joined" row; bench_process.py compares whole fresh starts with and without it).
Each session run pays only the bookkeeping row (discard stale frames, apply limits when
changed, reset the peak, read the OOM counter, list the checkpoint's children).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import measure, print_table, row
from agenticraft.jail.confine import cgroups
from agenticraft.jail.confine.apply import unit_layout
from agenticraft.jail.confine.probe import mechanisms
from agenticraft.jail.tree import children
from agenticraft.sandbox.host_report import disabled_from_env
from agenticraft.sandbox.unit import Unit


def fork_and_wait(setup: object = None) -> None:
    pid = os.fork()
    if pid == 0:
        if setup is not None:
            setup()  # type: ignore[operator]
        os._exit(0)
    os.waitpid(pid, 0)


def main(n: int) -> None:
    mech = mechanisms(disabled_from_env(), prepare=True)  # AGENTICRAFT_DISABLE=cgroup_v1: v2
    layout = unit_layout(mech)
    baseline = measure(fork_and_wait, n)
    rows = [row("fork + exit + wait (baseline)", baseline, baseline)]
    if layout is None:
        print(f"no cgroup unit here ({mech['cgroups']['detail']}): the process group is the "
              "unit, nothing to create")
    else:
        name = f"{os.getpid()}-{os.getpid()}"

        limits = {"memory_mb": 512, "cpu_percent": 50, "max_processes": 33}

        def place() -> None:
            cgroups.place(layout, name, **limits)

        def create_join_remove() -> None:
            fork_and_wait(place)
            cgroups.remove(layout, name)

        def pre_joined() -> None:  # what a blank child leaves for the path: the limits
            cgroups.place(layout, name, joined=True, **limits)

        what = f"cgroup v{layout.version}, {len(layout.bases)} hierarch(ies)"
        rows.append(row(f"fork + create/join unit ({what}) + remove",
                        measure(create_join_remove, n), baseline))
        cgroups.create(layout, name)
        rows.append(row("fork + limits in a pre-joined unit (blank child)",
                        measure(lambda: fork_and_wait(pre_joined), n), baseline))
        pid = os.fork()
        if pid == 0:
            place()
            signal.pause()
            os._exit(0)
        unit = Unit.for_worker(mech, *map(int, name.split("-")))

        def bookkeeping() -> None:
            unit.set_limits(512, 50.0, 32)
            unit.reset_peak()
            unit.oom_kills()
            children(pid)

        rows.append(row("per session run: unit bookkeeping", measure(bookkeeping, n), baseline))
        rows.append(row("unit members (cgroup.procs)", measure(unit.members, n), baseline))
        rows.append(row("freeze + thaw the unit",
                        measure(lambda: (unit.stop(), unit.resume()), n), baseline))
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        cgroups.remove(layout, name)
    group = Unit(os.getpid())
    rows.append(row("fallback: process-group members (/proc scan)",
                    measure(lambda: group.members(), n), baseline))
    print_table("Accounting unit cost", rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200)
    main(parser.parse_args().n)
