"""The host report: which mechanisms this host supports and which limit each one enforces.

``doctor`` prints it; every ``ExecutionResult.enforced`` carries the per-limit part. A mechanism
can be switched off for testing with ``AGENTICRAFT_DISABLE=landlock,seccomp,namespaces,rlimits``
(ignored when an administrator's policy file exists, so users cannot weaken a managed host).
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable, Mapping
from typing import Any

from agenticraft.jail.confine.probe import MECHANISMS, SWITCHES, mechanisms
from agenticraft.jail.confine.rlimits import STACK_ROOM_MB
from agenticraft.sandbox.unit import INTERACTIVE_SECONDS
from agenticraft.security.policy import SYSTEM_POLICY_PATH
from agenticraft.wire import network
from agenticraft.wire.errors import QUOTA_FACTOR, SandboxUnavailable
from agenticraft.wire.network import NetworkAccess

DISABLE_ENV = "AGENTICRAFT_DISABLE"
#: Opt-in: sandboxes share identical memory pages (jail/confine/pages.py says what it costs).
SHARE_PAGES_ENV = "AGENTICRAFT_SHARE_PAGES"
KSM = "/sys/kernel/mm/ksm"


def disabled_from_env(env: Mapping[str, str] | None = None) -> frozenset[str]:
    env = os.environ if env is None else env
    names = {n.strip().lower() for n in env.get(DISABLE_ENV, "").split(",") if n.strip()}
    unknown = names - set(MECHANISMS) - set(SWITCHES)
    if unknown:
        from agenticraft.wire.errors import ConfigurationError

        raise ConfigurationError(
            f"{DISABLE_ENV}: unknown mechanism(s) {sorted(unknown)}; "
            f"valid: {', '.join(MECHANISMS + SWITCHES)}"
        )
    if names and SYSTEM_POLICY_PATH.exists():
        return frozenset()  # a managed host: testing switches are not honoured
    return frozenset(names)


def check_required(policy: Any, mech: Mapping[str, Mapping[str, Any]]) -> None:
    """Refuse to run code where the administrator's policy requires a mechanism this host lacks
    (``[sandbox] require = ["namespaces", ...]``): say what is missing and what to change."""
    required = sorted(getattr(policy, "required_mechanisms", ()) or ())
    missing = [f"{name}: {mech.get(name, {}).get('detail', 'unknown mechanism')}"
               + (" (switched off with AGENTICRAFT_DISABLE)"
                  if mech.get(name, {}).get("disabled") else "")
               for name in required if not mech.get(name, {}).get("active")]
    if missing:
        raise SandboxUnavailable(
            "process", missing,
            f"The administrator's policy ({policy.source_text()}) requires "
            f"{', '.join(required)}. Run where they are available (see `python -m "
            "agenticraft_kernel doctor`), or remove them from [sandbox] require.")


def limit_enforcement(mech: Mapping[str, Mapping[str, Any]], *,
                      euid: int | None = None) -> dict[str, str]:
    """For each limit, the mechanism that enforces it here, or DEGRADED/NOT ENFORCED and why.
    ``euid``: the workers' user when it is not this process's (in a container)."""
    on = {name: bool(info["active"]) for name, info in mech.items()}
    private_root = on.get("mounts", False) and on["namespaces"]
    ll = mech["landlock"]
    root = (os.geteuid() if euid is None else euid) == 0
    network = [
        m
        for m, ok in (
            ("network namespace", on["namespaces"]),
            ("seccomp socket filter (AF_UNIX only)", on["seccomp"]),
            ("Landlock TCP deny", on["landlock"] and ll.get("tcp")),
        )
        if ok
    ]
    nproc = on["rlimits"] and not root  # uid 0 is exempt from RLIMIT_NPROC, namespace or not
    unit = _unit_controllers(mech)
    v = f"cgroup v{mech['cgroups'].get('version', 1)}"
    return {
        "timeout_seconds": "supervisor wall clock; the whole unit ("
        + (f"{v}, frozen" if "freezer" in unit else "process group, stopped")
        + (f") then killed (one {v} cgroup.kill)" if "kill" in unit else ") then killed")
        + ("" if unit or on["seccomp"] else
           " (DEGRADED: without seccomp, code can leave its process group with setsid)"),
        "memory_mb": _memory(on, unit, v),
        "cpu_percent": _cpu(unit, v),
        "max_file_size_mb": _disk(on["rlimits"], private_root,
                                  bool(mech.get("mounts", {}).get("overlay"))),
        "network_access": (
            " + ".join(network)
            if network
            else "NOT ENFORCED: no namespaces, seccomp or Landlock TCP here"
        ),
        "filesystem_access": _filesystem(
            on["landlock"], ll.get("abi"), private_root,
            private_root and bool(mech["mounts"].get("pid_namespace"))),
        "max_processes": _max_processes(on, nproc, root, v),
        "max_output_bytes": "supervisor stream cap (cut with a marker)",
        "max_network_bytes": "egress proxy byte count per run (with a network_access "
                             "allow-list; no budget otherwise)",
    }


def network_enforcement(value: NetworkAccess, mech: Mapping[str, Mapping[str, Any]], *,
                        isolated_by: str | None = None) -> str:
    """What enforces ``network_access=value`` here (doctor, ``ExecutionResult.enforced``).
    ``isolated_by``: the network namespace without a route out that the workers already run
    in when they cannot make their own (a container's, with network_mode none)."""
    if value is True:
        return "allowed by the context (network_access=True): the host's network"
    if value is False:
        return limit_enforcement(mech)["network_access"]
    own = mech["namespaces"]["active"]
    if not own and not isolated_by:
        return (f"NOT AVAILABLE: {network.describe(value)} needs a private network namespace "
                "(unprivileged user namespaces), which this host lacks; such runs are refused")
    families = (" + seccomp socket filter (unix, IPv4, IPv6 only)"
                if mech.get("seccomp", {}).get("active") else "")
    where = "the sandbox's own network namespace" if own else isolated_by
    return (f"{network.describe(value)}: host-side egress proxy (names resolved and every "
            "connection checked on the host after resolution, each one audited); "
            f"{where} has no other route{families}")


def container_network(value: NetworkAccess) -> str:
    """The container-level part of ``network_access=value`` in the container sandbox (which
    gives every value the process sandbox's meaning; docs/network.md)."""
    if value is True:
        return "container in the host's network namespace (network_mode host)"
    return "container without network (network_mode none)" + (
        "; the host egress proxy's socket alone is bound into it (read-only)" if value else "")


def _unit_controllers(mech: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """What the worker's cgroup unit does here (memory, cpu, pids, cpuacct, freezer, kill)."""
    from agenticraft.jail.confine.apply import unit_layout
    unit = unit_layout(mech)
    return set(unit.caps) if unit is not None else set()


def _cpu(unit: set[str], v: str) -> str:
    if "cpu" in unit:
        files = "cpu.max" if v.endswith("2") else "cpu.cfs_quota_us"
        return (f"{v} {files} for the whole unit (session: checkpoint, runner, children); "
                f"a cell running over {INTERACTIVE_SECONDS:g} s and busy background work "
                "yield the CPU to interactive cells (cpu.idle)")
    no_priority = "; no priority for interactive cells over busy ones"
    if "freezer" in unit:
        files = "cgroup.freeze" if v.endswith("2") else "freezer"
        return (f"supervisor duty-cycle throttling of the whole unit at once ({v} {files}; "
                f"no cpu controller here{no_priority})")
    return ("supervisor duty-cycle throttling of the whole process group at once "
            f"(killpg SIGSTOP/SIGCONT; no cpu cgroup here{no_priority})")


def _memory(on: Mapping[str, bool], unit: set[str], v: str) -> str:
    if "memory" in unit:
        files = ("memory.max + memory.swap.max" if v.endswith("2")
                 else "memory.limit_in_bytes")
        return (f"{v} {files} for the whole unit (OOM inside it reported as "
                "memory_mb); RLIMIT_AS only as a generous backstop")
    watched = f"{v} unit" if unit else "process group"
    if on["rlimits"]:
        return ("DEGRADED (no memory cgroup): RLIMIT_DATA (baseline + limit) stops heap, "
                "numpy, anonymous-mmap and thread-stack bombs; the supervisor's RSS watch of the "
                f"{watched} stops shared anonymous mappings (polling); not counted in "
                "memory_mb: files in the private tmpfs (bounded by the write quota instead) and "
                "pipe buffers (bounded only by the kernel's per-user pipe pages)")
    return "DEGRADED: supervisor RSS watch only (polling; rlimits and cgroups off)"


PRIVATE_ROOT = ("private root (own mount namespace: only the interpreter, the environment, the "
                "package and the working directory exist; secrets and audit files masked)")


def _filesystem(landlock: bool, abi: Any, private_root: bool, own_proc: bool) -> str:
    parts = [PRIVATE_ROOT + ("; own PID namespace and /proc: no host process is visible"
                             if own_proc else "; the host's /proc, unreadable under Landlock")]
    parts = parts if private_root else []
    if landlock:
        parts.append(f"Landlock ABI {abi} (read-only system paths, private scratch)")
    if parts:
        return " + ".join(parts)
    return ("NOT ENFORCED: no private root and Landlock unavailable or off; code can read and "
            "write whatever this OS user can")


def _disk(rlimits: bool, private_root: bool, overlay: bool) -> str:
    per_file = "RLIMIT_FSIZE per file" if rlimits else "DEGRADED: no per-file limit (rlimits off)"
    if private_root:
        return (f"{per_file} + total write quota of {QUOTA_FACTOR} x max_file_size_mb per run or "
                "session for /tmp, /dev/shm and scratch (size-limited private tmpfs; unlinked "
                "open files count)" + (
                    " and the changes to a read-write working directory (an overlay whose upper "
                    "layer is on that tmpfs; copied to the host when a run or kept cell ends)"
                    if overlay else "; writes to a read-write working directory: per file only "
                    "(overlayfs cannot be mounted here)"))
    return f"{per_file} + scratch size watchdog (polling; unlinked files not seen)"


def _max_processes(on: Mapping[str, bool], nproc: bool, root: bool, v: str) -> str:
    parts = []
    if on["pids_cgroup"]:
        parts.append(f"{v} pids.max for the whole unit (threads count)")
    if nproc:
        parts.append("RLIMIT_NPROC counted in a private user namespace" if on["namespaces"]
                     else "RLIMIT_NPROC (per OS user)")
    if parts:
        return " + ".join([*parts, "supervisor watchdog"])
    why = "uid 0 is exempt from RLIMIT_NPROC" if root and on["rlimits"] else "rlimits off"
    return f"DEGRADED: supervisor watchdog only ({why})"


def share_pages_from_env(env: Mapping[str, str] | None = None) -> bool:
    value = (os.environ if env is None else env).get(SHARE_PAGES_ENV, "")
    return value.strip().lower() in ("1", "true", "yes", "on")


def page_sharing(requested: bool) -> str:
    """What ``AGENTICRAFT_SHARE_PAGES`` does on this host (doctor's "Memory" line)."""
    if not requested:
        return (f"not shared ({SHARE_PAGES_ENV}=1 lets the kernel merge the pages all "
                "sandboxes have in common, about -30 MB per kernel at scale; it adds a timing "
                "side channel between sandboxes: docs/security-model.md)")
    from agenticraft.jail.confine.libc import PR_GET_MEMORY_MERGE, prctl
    try:
        prctl(PR_GET_MEMORY_MERGE)
    except OSError:
        return (f"{SHARE_PAGES_ENV}=1 but NOT AVAILABLE: this kernel has no "
                "PR_SET_MEMORY_MERGE (Linux >= 6.4): nothing is merged")
    try:
        with open(f"{KSM}/run") as fh:
            running = fh.read().strip() == "1"
        with open(f"{KSM}/pages_to_scan") as fh:
            scan = fh.read().strip()
        with open(f"{KSM}/sleep_millisecs") as fh:
            sleep = fh.read().strip()
    except OSError:
        return f"{SHARE_PAGES_ENV}=1 but this kernel has no KSM ({KSM}): nothing is merged"
    if not running:
        return (f"{SHARE_PAGES_ENV}=1 but ksmd is off: nothing is merged until an "
                f"administrator runs `echo 1 > {KSM}/run`")
    return (f"shared ({SHARE_PAGES_ENV}=1): sandboxes run without address-space "
            f"randomisation, with hash seed 0, opted into KSM; ksmd scans {scan} pages every "
            f"{sleep} ms (more merges sooner, at a CPU cost)")


def host_report(disabled: Iterable[str] | None = None) -> dict[str, Any]:
    """Everything ``doctor`` prints, as data."""
    disabled = disabled_from_env() if disabled is None else frozenset(disabled)
    mech = mechanisms(disabled)
    return {
        "host": {
            "kernel": platform.release(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "euid": os.geteuid(),
        },
        "mechanisms": mech,
        "limits": limit_enforcement(mech),
        "network": effective_network(mech),
        "restricted": {"c_stack": c_stack(mech)},
        "memory": {"page_sharing": page_sharing(share_pages_from_env())},
        "disabled": sorted(disabled),
    }


def c_stack(mech: Mapping[str, Mapping[str, Any]]) -> str:
    """How deep C recursion (CPython hashing a tuple nested a million deep) ends in a
    restricted worker here."""
    room = mech.get("rlimits", {}).get("stack_room_mb")
    if room is not None and room < STACK_ROOM_MB:
        return (f"DEGRADED: the hard RLIMIT_STACK leaves only {room} MB for a worker's stack: "
                f"with memory_mb above {max(0, (room - 64) // 2)}, deep C recursion crashes the "
                "worker (SIGSEGV) instead of ending as memory_mb")
    return ("main-thread stack up to 2 x memory_mb + 64 MB (RLIMIT_STACK; room reserved when "
            "the zygote is exec'd): deep C recursion ends as memory_mb, not as a stack overflow")


def effective_network(mech: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """The network this host's policy and the user's settings give a run by default."""
    from agenticraft.security.config import load_settings
    from agenticraft.security.policy import load_policy
    try:
        policy = load_policy()
        ctx = policy.resolve(None, limit_defaults=load_settings().limit_defaults)
    except Exception as exc:  # a broken policy or config is itself worth reporting
        return {"effective": f"unknown: {exc}", "ceiling": "", "enforced_by": "",
                "in_container": ""}
    value = ctx.resource_limits.network_access
    return {"effective": network.describe(value),
            "ceiling": network.describe(policy.ceilings.network_access),
            "enforced_by": network_enforcement(value, mech),
            "in_container": container_network(value)}


def format_report(report: Mapping[str, Any]) -> str:
    """Plain-text table for ``python -m agenticraft_kernel doctor``."""
    lines = ["AgentiCraft Secure: what this host enforces", ""]
    host = report["host"]
    lines.append(
        f"kernel {host['kernel']} ({host['machine']}), Python {host['python']}, euid {host['euid']}"
    )
    lines += ["", "Mechanisms:"]
    for name, info in report["mechanisms"].items():
        state = (
            "off (disabled for testing)"
            if info["disabled"]
            else "yes"
            if info["available"]
            else "no"
        )
        lines.append(f"  {name:<11} {state:<27} {info.get('detail', '')}")
    lines += ["", "Limits:"]
    for limit, how in report["limits"].items():
        lines.append(f"  {limit:<18} {how}")
    net = report.get("network")
    if net:
        lines += ["", "Network (policy + your settings, by default):",
                  f"  effective          {net['effective']}",
                  f"  policy ceiling     {net['ceiling']}",
                  f"  enforced by        {net['enforced_by']}",
                  f"  in a container     {net['in_container']}"]
    restricted = report.get("restricted")
    if restricted:
        lines += ["", "Restricted sandbox:", f"  c_stack            {restricted['c_stack']}"]
    memory = report.get("memory")
    if memory:
        lines += ["", "Memory:", f"  page_sharing       {memory['page_sharing']}"]
    return "\n".join(lines)
