"""Confine the current (freshly forked, single-threaded) process, in a fixed order.

Order: new session, parent-death signal, user + IPC + UTS (+ network) namespaces, the
private root in its own mount namespace (``mounts``), not dumpable, no_new_privs,
rlimits, Landlock, seccomp. (Not-dumpable comes after the namespace step because writing
``/proc/self/uid_map`` needs a dumpable process.) Every step that is switched off or not
supported is recorded, so the result says exactly what holds.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import stat
from collections.abc import Mapping
from typing import Any

from agenticraft.jail.confine import cgroups, landlock, mounts, namespaces, pidns, rlimits, seccomp
from agenticraft.jail.confine.libc import (
    PR_SET_DUMPABLE,
    PR_SET_NO_NEW_PRIVS,
    PR_SET_PDEATHSIG,
    prctl,
)


def ahead_possible(mechanisms: Mapping[str, Mapping[str, Any]]) -> bool:
    """Can a blank child enter its namespaces and fork its init and worker before it knows its
    profile? Only where every worker gets the same shape: user, IPC, UTS, mount and PID
    namespaces and a private root."""
    return all(mechanisms.get(name, {}).get("active") for name in ("namespaces", "mounts")) \
        and bool(mechanisms["mounts"].get("pid_namespace"))


def fits_ahead(profile: Mapping[str, Any]) -> bool:
    """Does a blank prepared ahead (``prepare``: its own network namespace, no overlay socket)
    give ``profile`` exactly what ``confine`` would? Not with the host's network (no network
    namespace at all) nor a writable working directory (its overlay needs the socket at fork)."""
    overlay = bool(profile.get("workdir")) and profile["workdir"] in profile["write_paths"]
    return profile["network_access"] is not True and not overlay


def prepare(mechanisms: Mapping[str, Mapping[str, Any]], expected_parent: int,
            unit: str) -> dict[str, Any]:
    """In a blank child, before its profile is known: the steps ``confine`` would take first
    that no profile changes (new session, parent-death signal, user + IPC + UTS + network +
    mount + PID namespaces with their id maps, caps and host name, the PID namespace's init
    and worker). Returns in the worker (process 2); this process stays outside as the keeper
    and the init waits (``pidns.start_init_ahead``). Pass the result to ``confine``
    (``prepared``) with a profile that ``fits_ahead``; ``unit``: the cgroup unit's name, which
    is this (outer) process's."""
    _new_session(expected_parent)
    applied = namespaces.enter(network=False, mount=True, pid=True, drop=False)
    init_pid, init_sock = pidns.start_init_ahead()
    return {"unit": unit, "namespaces": applied, "init_pid": init_pid, "init_sock": init_sock}


def unit_limits(profile: Mapping[str, Any], helpers: int) -> dict[str, Any]:
    """The limits ``confine`` sets on the worker's cgroup unit. ``helpers``: the keeper and
    the init (2) with a PID namespace; a kept undo state is one more process of the session's."""
    held = 1 if profile.get("undo_state") else 0
    return {"memory_mb": profile["memory_mb"], "cpu_percent": profile["cpu_percent"],
            "max_processes": profile["max_processes"] + 1 + helpers + held}


def _new_session(expected_parent: int) -> None:
    os.setsid()
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != expected_parent:  # parent died before the death signal was armed
        os._exit(1)


def confine(
    profile: Mapping[str, Any], mechanisms: Mapping[str, Mapping[str, Any]], expected_parent: int,
    prepared: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Apply ``profile`` (see ``profile.build_profile``) with the mechanisms that are active.
    ``prepared``: what ``prepare`` did ahead in this blank child (its steps are skipped)."""
    active = {name for name, info in mechanisms.items() if info.get("active")}
    applied: dict[str, Any] = {}
    if prepared is None:
        _new_session(expected_parent)
    elif not (ahead_possible(mechanisms) and fits_ahead(profile) and profile.get("scratch")):
        raise RuntimeError("a blank prepared ahead was given a profile it does not fit")

    network = profile["network_access"] is True  # the host's network
    # An allow-list: own namespace with loopback up (the egress shim listens there); the only
    # way out is the host proxy's unix socket, so TCP/INET sockets are allowed inside it.
    # Without a namespace of its own, INET sockets would reach the host's network: not allowed,
    # unless this process already runs in a namespace without a route out (``isolated_network``:
    # a container with network_mode none, whose loopback the shim then listens on).
    # ``loopback`` (a debugger session: debugpy and its adapter talk TCP on loopback): the
    # same own namespace with nothing but loopback, and no proxy at all.
    egress = bool(profile.get("egress_socket") or profile.get("loopback")) and (
        "namespaces" in active or bool(profile.get("isolated_network")))
    private_root = "namespaces" in active and "mounts" in active and bool(profile.get("scratch"))
    # With a PID namespace the keeper and the init (``pidns``) are processes of the sandbox too.
    pid_ns = private_root and bool(mechanisms["mounts"].get("pid_namespace"))
    helpers = 2 if pid_ns else 0
    # The zygote's socket for a writable working directory's overlay (used by ``mounts.build``,
    # which closes it; closed here otherwise): the sandbox never holds it.
    writeback = _writeback_fd()
    if writeback is not None and not private_root:
        _close(writeback)
        writeback = None
    # A session that keeps an undo state has one more process of its own: the stopped
    # checkpoint of its last run, which max_processes does not count either.
    held = 1 if profile.get("undo_state") else 0
    unit = unit_layout(mechanisms, active)
    limits = unit_limits(profile, helpers)
    # Before the namespace step: the cgroup fs is still visible (a blank prepared ahead is in
    # its namespaces already, but its root is not built yet: it still sees it, and the unit's
    # files are its own, as they are for an unprivileged worker).
    if unit is not None:
        applied["cgroups"] = cgroups.place(
            unit, prepared["unit"] if prepared else f"{expected_parent}-{os.getpid()}",
            **limits, joined=bool(profile.get("unit_joined")),
            written=profile.get("unit_limits") == limits)
    if "namespaces" in active:
        if prepared is None:
            applied["namespaces"] = namespaces.enter(network=network, mount=private_root,
                                                     pid=pid_ns, drop=False, loopback=egress)
        else:  # entered ahead, without the network: loopback up now if the profile wants it
            if egress:
                namespaces.loopback_up()
            applied["namespaces"] = {**prepared["namespaces"], "loopback": egress}
        root_plan: dict[str, Any] = {}
        if private_root:
            root_plan = {**(profile.get("root_plan") or mounts.plan(profile, profile["scratch"])),
                         "scratch": profile["scratch"]}
        if prepared is not None:  # this is process 2 already, the init waits for the root
            applied["pid_namespace"] = {"init_pid": prepared["init_pid"]}
        elif pid_ns:  # from here on this is process 1 of the namespace; the keeper stays outside
            # With a writable working directory the keeper keeps the overlay socket to renew
            # the overlay between session cells (``mounts.renew``); the init closes its copy.
            serve = None if writeback is None else (
                writeback, functools.partial(mounts.serve_renewals, root_plan))
            applied["pid_namespace"] = {"init_pid": pidns.start_init(serve)}
        if private_root:  # needs the capabilities the user namespace gives, so before the drop
            applied["mounts"] = mounts.build(root_plan, os.getcwd(), own_proc=pid_ns,
                                             writeback=writeback)
            # Inside, a protected path is masked by a read-only mount (which cannot be unmounted,
            # renamed over or removed) or does not exist at all. Landlock then needs no holes
            # in the working directory, which would forbid creating files at its top level.
            profile = {**profile, "deny_paths": []}
        if prepared is not None:  # the init moves into the root and drops its capabilities
            pidns.hand_root(prepared["init_sock"])  # (meanwhile this worker confines itself)
        elif pid_ns:
            pidns.start_worker()  # the init stays behind; this is process 2, the worker
        namespaces.drop_capabilities()
    prctl(PR_SET_DUMPABLE, 0)
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    if "rlimits" in active:
        applied["rlimits"] = rlimits.apply(
            memory_mb=profile["memory_mb"], memory_unit=unit is not None and "memory" in unit.caps,
            max_file_size_mb=profile["max_file_size_mb"],
            max_processes=profile["max_processes"], stack_mb=profile.get("stack_mb"),
            nproc_baseline=held + (helpers if "namespaces" in active
                                   else profile.get("nproc_baseline", 0)),
        )
    # The overlays' mount points: Landlock grants a writable working directory there, so a
    # session's renewed overlay (other inodes, same mount point) is granted too.
    anchors = mounts.take_anchors() if private_root else []
    if "landlock" in active:
        own = ["/tmp", "/dev/shm", "/dev/pts"] if private_root else []  # private tmpfs, devpts
        # The sandbox's own /proc shows only its own processes: readable as a whole.
        own_read = ["/proc"] if pid_ns and applied["mounts"].get("proc") == "own" else []
        applied["landlock"] = landlock.apply(
            [*profile["read_paths"], *own_read],
            [*profile["write_paths"], *own],
            allow_tcp=network or egress,
            deny_paths=profile.get("deny_paths", ()),
            scope=True,
            write_fds=anchors,
        )
    for fd in anchors:
        _close(fd)
    if "seccomp" in active:
        applied["seccomp"] = seccomp.apply(
            network_access=True if network else seccomp.INET_ONLY if egress else False,
            allow_process_creation=profile["max_processes"] > 1
        )
    if prepared is not None:  # nothing of the sandbox runs before the init has settled
        pidns.init_settled(prepared["init_sock"])
    return applied


def unit_layout(mechanisms: Mapping[str, Mapping[str, Any]],
                active: set[str] | None = None) -> cgroups.Layout | None:
    """The cgroup unit a worker gets here (pids only with ``pids_cgroup``; a v2 unit only
    behind Landlock or a private root, since its files belong to the sandboxed user)."""
    if active is None:
        active = {name for name, info in mechanisms.items() if info.get("active")}
    info = dict(mechanisms.get("cgroups", {}))
    if info.get("version") == 2 and not ({"landlock", "mounts"} & active):
        return None
    return cgroups.layout(info, limits="cgroups" in active, pids="pids_cgroup" in active)


def _writeback_fd() -> int | None:
    """The zygote's socket for the overlay descriptors, if it gave this worker one."""
    try:
        is_socket = stat.S_ISSOCK(os.fstat(mounts.WRITEBACK_FD).st_mode)
    except OSError:
        return None
    return mounts.WRITEBACK_FD if is_socket else None


def _close(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
