"""cgroup v2 delegation: probe only.

``memory.max``/``cpu.max``/``pids.max`` need a cgroup v2 subtree delegated to this user with
those controllers enabled. Where there is none (common on hosts that are not systemd user
sessions, and on this project's CI machines), memory falls back to RLIMIT_AS plus the
supervisor's RSS watchdog and cpu_percent to duty-cycle throttling; ``doctor`` says so.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

WANTED = ("memory", "cpu", "pids")


def _own_cgroup_v2() -> Path | None:
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("0::"):
            rel = line[3:].lstrip("/")
            for mount in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
                base = Path(mount)
                if (base / "cgroup.controllers").exists():
                    return base / rel
    return None


def probe() -> dict[str, Any]:
    group = _own_cgroup_v2()
    if group is None:
        return {"available": False, "detail": "no cgroup v2 hierarchy mounted"}
    try:
        enabled = (group / "cgroup.controllers").read_text().split()
    except OSError as exc:
        return {"available": False, "detail": f"cannot read {group}: {exc.strerror}"}
    missing = [c for c in WANTED if c not in enabled]
    writable = os.access(group, os.W_OK) and os.access(group / "cgroup.procs", os.W_OK)
    if missing or not writable:
        why = []
        if missing:
            why.append(f"controllers {', '.join(missing)} not enabled in {group}")
        if not writable:
            why.append(f"{group} is not delegated (not writable)")
        return {"available": False, "detail": "; ".join(why)}
    return {
        "available": False,
        "detail": f"{group} is delegated, but cgroup placement is not implemented yet",
    }
