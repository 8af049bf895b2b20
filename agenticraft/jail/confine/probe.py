"""Which confinement mechanisms work here: each mechanism module's own ``probe()``, together.

The zygote asks this once at start-up (it is what its workers will get); the host report
(:mod:`agenticraft.sandbox.host_report`) turns the answer into per-limit enforcement.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from agenticraft.jail.confine import cgroups, landlock, mounts, namespaces, rlimits, seccomp

MECHANISMS = ("rlimits", "namespaces", "mounts", "landlock", "seccomp", "cgroups", "pids_cgroup")


def mechanisms(disabled: Iterable[str] = ()) -> dict[str, dict[str, Any]]:
    """Availability of each mechanism on this host, with switched-off ones marked."""
    disabled = set(disabled)
    found = {
        "rlimits": rlimits.probe(),
        "namespaces": namespaces.probe(),
        "mounts": mounts.probe(),
        "landlock": landlock.probe(),
        "seccomp": seccomp.probe(),
        "cgroups": cgroups.probe(),
        "pids_cgroup": cgroups.pids_v1_probe(),
    }
    report = {}
    for name, info in found.items():
        info = dict(info)
        info["disabled"] = name in disabled
        info["active"] = bool(info.get("available")) and name not in disabled
        if name == "mounts" and found["namespaces"].get("available") and "namespaces" in disabled:
            info["active"] = False  # the private root lives in the namespaces it needs
        report[name] = info
    return report
