"""User and network namespaces: a private, empty network stack without privileges.

In a new network namespace only a loopback device exists, and it is down: no route reaches any
other host or any port on this one. A user namespace is what lets an unprivileged process create
it; it also makes RLIMIT_NPROC count only the sandbox's own processes.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

from agenticraft.jail.confine.libc import CLONE_NEWNET, CLONE_NEWUSER, capset, unshare

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
            unshare(CLONE_NEWUSER | CLONE_NEWNET)
            os.write(w, b"1")
        except OSError as exc:
            os.write(w, str(exc.errno).encode())
        os._exit(0)
    os.close(w)
    answer = os.read(r, 16)
    os.close(r)
    os.waitpid(pid, 0)
    if answer == b"1":
        return {"available": True, "detail": "unprivileged user + network namespaces work"}
    return {
        "available": False,
        "detail": f"unshare(CLONE_NEWUSER|CLONE_NEWNET) failed: {os.strerror(int(answer))}"
        " (check kernel.unprivileged_userns_clone / user.max_user_namespaces)",
    }


def enter(*, network: bool, loopback: bool = False) -> dict[str, Any]:
    """Move this (single-threaded) process into a new user namespace, and a new network
    namespace unless ``network``; keep the same uid/gid inside, then drop every capability.
    ``loopback`` brings the new namespace's ``lo`` up (still no route anywhere else), for the
    egress shim of an allow-list; it needs the namespace's capabilities, hence here."""
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWUSER | (0 if network else CLONE_NEWNET)
    unshare(flags)
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{uid} {uid} 1")
    _write("/proc/self/gid_map", f"{gid} {gid} 1")
    if loopback and not network:
        loopback_up()
    drop_capabilities()
    return {"user_namespace": True, "network_namespace": not network,
            "loopback": bool(loopback and not network)}


def loopback_up() -> None:
    """``ip link set lo up`` in the current network namespace (SIOCSIFFLAGS)."""
    import fcntl
    import socket
    import struct
    siocsifflags, iff_up, iff_loopback, iff_running = 0x8914, 0x1, 0x8, 0x40
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock, siocsifflags,
                    struct.pack("16sH22x", b"lo", iff_up | iff_loopback | iff_running))


def drop_capabilities() -> None:
    """Clear effective, permitted and inheritable capabilities (capset, version 3)."""

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [
            ("effective", ctypes.c_uint32),
            ("permitted", ctypes.c_uint32),
            ("inheritable", ctypes.c_uint32),
        ]

    header = Header(0x20080522, 0)
    data = (Data * 2)()
    capset(header, data)


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
