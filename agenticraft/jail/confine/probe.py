"""Which confinement mechanisms work here: each mechanism module's own ``probe()``, together.

The zygote asks this once at start-up (it is what its workers will get); the host report
(:mod:`agenticraft.sandbox.host_report`) turns the answer into per-limit enforcement.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from agenticraft.jail.confine import cgroups, landlock, mounts, namespaces, rlimits, seccomp

MECHANISMS = ("rlimits", "namespaces", "mounts", "landlock", "seccomp", "cgroups", "pids_cgroup")
#: Testing switches that are not mechanisms: ``cgroup_v1`` makes the unit use cgroup v2 even
#: where v1 controllers are writable (to test v2 as root on a hybrid host).
SWITCHES = ("cgroup_v1",)


def mechanisms(disabled: Iterable[str] = (), *, prepare: bool = False) -> dict[str, dict[str, Any]]:
    """Availability of each mechanism on this host, with switched-off ones marked.
    ``prepare`` (the zygote, once): make a delegated cgroup v2 subtree ready for units, so the
    answer says which controllers are really enabled there."""
    disabled = set(disabled)
    units = cgroups.probe(v1="cgroup_v1" not in disabled)
    found = {
        "rlimits": rlimits.probe(),
        "namespaces": namespaces.probe(),
        "mounts": mounts.probe(),
        "landlock": landlock.probe(),
        "seccomp": seccomp.probe(),
    }
    if units.get("version") == 2 and units["available"]:
        if not (found["landlock"].get("available") or found["mounts"].get("available")):
            # The unit's files belong to the user the code runs as: only walls keep it out.
            units = {"available": False,
                     "detail": f"cgroup v2 subtree {units['delegated']} not used: without "
                               "Landlock or a private root, code running as this user could "
                               "rewrite its own unit"}
        elif prepare and not {"cgroups", "pids_cgroup"} <= disabled:
            units = cgroups.prepare_v2(units)
    found["cgroups"] = units
    found["pids_cgroup"] = cgroups.pids_probe(units)
    report = {}
    for name, info in found.items():
        info = dict(info)
        info["disabled"] = name in disabled
        info["active"] = bool(info.get("available")) and name not in disabled
        if name == "mounts" and found["namespaces"].get("available") and "namespaces" in disabled:
            info["active"] = False  # the private root lives in the namespaces it needs
        report[name] = info
    return report
