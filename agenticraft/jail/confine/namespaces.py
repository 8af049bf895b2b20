"""User, network, IPC and UTS namespaces: a private, empty network stack without privileges.

In a new network namespace only a loopback device exists, and it is down: no route reaches any
other host or any port on this one. A user namespace is what lets an unprivileged process create
it; it also makes RLIMIT_NPROC count only the sandbox's own processes. The IPC namespace hides
the host's SysV objects and POSIX message queues; the mount namespace (when asked for) holds the
private root that ``mounts`` builds.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
from typing import Any

from agenticraft.jail.confine.libc import (
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUSER,
    CLONE_NEWUTS,
    capset,
    unshare,
)

#: Namespaces every sandbox gets besides the user namespace (and the network one when the
#: network is off): its own SysV IPC objects and POSIX message queues, its own host name.
PRIVATE = CLONE_NEWIPC | CLONE_NEWUTS
#: Kernel objects counted per user, capped inside the sandbox's user namespace (the counts are
#: charged to every level up to the host's, so a cap here keeps the host user's share free).
UCOUNT_CAPS = {"max_inotify_instances": 32, "max_inotify_watches": 8192,
               # (128 groups per user by default: one sandbox held them all; none needs one)
               "max_fanotify_groups": 0, "max_fanotify_marks": 0,
               "max_user_namespaces": 0, "max_mnt_namespaces": 0, "max_ipc_namespaces": 0,
               "max_net_namespaces": 0, "max_pid_namespaces": 0, "max_uts_namespaces": 0,
               "max_cgroup_namespaces": 0, "max_time_namespaces": 0}
_probe_cache: dict[str, Any] | None = None


def probe() -> dict[str, Any]:
    """Can this host create unprivileged user (+network) namespaces? Tested in a child."""
    global _probe_cache
    if _probe_cache is None:
        _probe_cache = _probe_in_child()
    return _probe_cache


def _probe_in_child() -> dict[str, Any]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(r)
        try:
            unshare(CLONE_NEWUSER | CLONE_NEWNET | PRIVATE)
            os.write(w, b"ok")
        except OSError as exc:  # errno as text: "1" is EPERM (Docker's default seccomp)
            os.write(w, str(exc.errno or 0).encode())
        os._exit(0)
    os.close(w)
    answer = os.read(r, 16)
    os.close(r)
    os.waitpid(pid, 0)
    if answer == b"ok":
        return {"available": True,
                "detail": "unprivileged user, network, IPC and UTS namespaces work"}
    return {
        "available": False,
        "detail": "unshare(CLONE_NEWUSER|CLONE_NEWNET|CLONE_NEWIPC|CLONE_NEWUTS) failed: "
        f"{os.strerror(int(answer))}"
        " (check kernel.unprivileged_userns_clone / user.max_user_namespaces; in a container,"
        " its seccomp profile: Docker's default refuses it, the project's allows it)",
    }


def enter(*, network: bool, mount: bool = False, pid: bool = False,
          drop: bool = True, loopback: bool = False) -> dict[str, Any]:
    """Move this (single-threaded) process into new user, IPC and UTS namespaces, a new network
    namespace unless ``network``, a new mount namespace if ``mount`` and a new PID namespace for
    its children if ``pid`` (see ``pidns``); keep the same uid/gid inside, cap per-user kernel
    objects, then (``drop``) drop every capability. With ``drop`` false the caller builds its
    mounts first and calls ``drop_capabilities`` itself. ``loopback`` brings the new network
    namespace's ``lo`` up (still no route anywhere else), for the egress shim of an allow-list;
    it needs the namespace's capabilities, hence here."""
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWUSER | PRIVATE | (0 if network else CLONE_NEWNET) | (
        CLONE_NEWNS if mount else 0) | (CLONE_NEWPID if pid else 0)
    unshare(flags)
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{uid} {uid} 1")
    _write("/proc/self/gid_map", f"{gid} {gid} 1")
    if loopback and not network:
        loopback_up()
    capped = cap_ucounts()
    with contextlib.suppress(OSError):
        socket.sethostname("sandbox")
    if drop:
        drop_capabilities()
    return {"user_namespace": True, "network_namespace": not network, "ipc_namespace": True,
            "uts_namespace": True, "mount_namespace": mount, "pid_namespace": pid,
            "capped": capped, "loopback": bool(loopback and not network)}


def loopback_up() -> None:
    """``ip link set lo up`` in the current network namespace (SIOCSIFFLAGS)."""
    import fcntl
    import struct
    siocsifflags, iff_up, iff_loopback, iff_running = 0x8914, 0x1, 0x8, 0x40
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock, siocsifflags,
                    struct.pack("16sH22x", b"lo", iff_up | iff_loopback | iff_running))


def cap_ucounts() -> list[str]:
    """Lower this user namespace's limits on per-user kernel objects (``UCOUNT_CAPS``)."""
    capped = []
    for name, value in UCOUNT_CAPS.items():
        try:
            _write(f"/proc/sys/user/{name}", str(value))
            capped.append(name)
        except OSError:
            continue
    return capped


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def drop_capabilities() -> None:
    """Clear effective, permitted and inheritable capabilities (capset, version 3). The ctypes
    types are made once, in the zygote: making them costs a worker ~0.1 ms."""
    capset(_CapHeader(0x20080522, 0), (_CapData * 2)())


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
