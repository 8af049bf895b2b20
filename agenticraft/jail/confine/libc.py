"""The one place that loads libc through ctypes: prctl, raw syscalls, unshare/capset, the mount
calls (mount, mount_setattr) and their flags, madvise, and small facts about the
calling process that several confinement steps (and the zygote, worker and host) need."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
from typing import Any

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_GET_SECCOMP = 21
PR_SET_SECCOMP = 22
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_SET_MEMORY_MERGE = 67  # Linux >= 6.4
PR_GET_MEMORY_MERGE = 68
_PR_NAMES = {value: name for name, value in globals().items() if name.startswith("PR_")}

CLONE_THREAD = 0x00010000
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
#: Every flag of clone(2)/unshare(2) that creates a namespace.
CLONE_NAMESPACE_FLAGS = (CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER,
                         CLONE_NEWPID, CLONE_NEWNET)

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.prctl.restype = ctypes.c_int
# void*-sized arguments: plain integers and pointers (ctypes.byref) alike.
LIBC.prctl.argtypes = [ctypes.c_int] + [ctypes.c_void_p] * 4
with contextlib.suppress(AttributeError):  # a libc without syscall(): syscall() raises it
    LIBC.syscall.restype = ctypes.c_long


def _error(what: str) -> OSError:
    err = ctypes.get_errno() or errno.EINVAL
    return OSError(err, f"{what} failed: {os.strerror(err)}")


def prctl(option: int, arg2: Any = 0, arg3: Any = 0, arg4: Any = 0, arg5: Any = 0) -> int:
    """prctl(2): its (non-negative) result, or OSError naming the option."""
    result = LIBC.prctl(option, arg2, arg3, arg4, arg5)
    if result < 0:
        raise _error(f"prctl({_PR_NAMES.get(option, option)})")
    return int(result)


def personality(persona: int) -> int:
    """personality(2): the previous persona (0xffffffff only reads it)."""
    result = LIBC.personality(ctypes.c_ulong(persona))
    if result < 0:
        raise _error("personality")
    return int(result)


def syscall(nr: int, *args: Any) -> int:
    """Raw syscall; every argument must already be a ctypes object. Raises OSError."""
    ctypes.set_errno(0)
    result = int(LIBC.syscall(ctypes.c_long(nr), *args))
    if result < 0:
        err = ctypes.get_errno() or errno.EINVAL
        raise OSError(err, os.strerror(err))
    return result


def unshare(flags: int) -> None:
    """unshare(2), or OSError."""
    if LIBC.unshare(flags) != 0:
        raise _error("unshare")


#: Mount flags (mount(2)) used to build a sandbox's private root.
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
#: mount_setattr has the same number everywhere (Linux >= 5.12).
SYS_MOUNT_SETATTR = 442


def _b(text: str | bytes | None) -> bytes | None:
    return text if text is None or isinstance(text, bytes) else os.fsencode(text)


def mount(source: str | None, target: str, fstype: str | None, flags: int,
          data: str | None = None) -> None:
    """mount(2), or OSError naming source and target."""
    if LIBC.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data)) != 0:
        raise _error(f"mount({source!r} -> {target!r})")


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def mount_setattr(path: str, attr_set: int, *, recursive: bool = True) -> None:
    """mount_setattr(2) on the mount at ``path`` (and below it if ``recursive``), or OSError
    (ENOSYS before Linux 5.12)."""
    attr = _MountAttr(attr_set, 0, 0, 0)
    syscall(SYS_MOUNT_SETATTR, ctypes.c_int(AT_FDCWD), _b(path),
            ctypes.c_uint(AT_RECURSIVE if recursive else 0), ctypes.byref(attr),
            ctypes.c_size_t(ctypes.sizeof(attr)))


#: move_mount has the same number everywhere (Linux >= 5.2); mounting beneath, Linux >= 6.5.
SYS_MOVE_MOUNT = 429
MOVE_MOUNT_BENEATH = 0x200
MNT_DETACH = 0x2


def move_mount_beneath(source: str, target: str) -> None:
    """Move the mount at ``source`` beneath the top mount at ``target``: once that one is
    unmounted, ``source``'s takes its place with no moment where neither shows (Linux >= 6.5)."""
    syscall(SYS_MOVE_MOUNT, ctypes.c_int(AT_FDCWD), _b(source), ctypes.c_int(AT_FDCWD),
            _b(target), ctypes.c_uint(MOVE_MOUNT_BENEATH))


def umount2(target: str, flags: int) -> None:
    """umount2(2), or OSError naming the target."""
    if LIBC.umount2(_b(target), ctypes.c_int(flags)) != 0:
        raise _error(f"umount({target!r})")


MADV_POPULATE_WRITE = 23  # Linux >= 5.14


def populate_write(address: int, length: int) -> int:
    """madvise(MADV_POPULATE_WRITE): fault the range in as if written, without changing a byte
    (breaks copy-on-write sharing ahead of time). 0, or the errno (EINVAL: the kernel lacks it;
    ENOMEM/EFAULT: part of the range is no longer mapped)."""
    ctypes.set_errno(0)
    if LIBC.madvise(ctypes.c_void_p(address), ctypes.c_size_t(length),
                    ctypes.c_int(MADV_POPULATE_WRITE)) != 0:
        return ctypes.get_errno() or errno.EINVAL
    return 0


def capset(header: Any, data: Any) -> None:
    """capset(2) with ctypes structures, or OSError."""
    if LIBC.capset(ctypes.byref(header), data) != 0:
        raise _error("capset")


def set_no_new_privs() -> None:
    """prctl(PR_SET_NO_NEW_PRIVS): required before Landlock and seccomp; idempotent."""
    if prctl(PR_GET_NO_NEW_PRIVS) == 1:
        return
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def thread_count() -> int:
    """Threads in this process (Landlock and seccomp apply per thread unless synchronised)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        import threading

        return threading.active_count()
