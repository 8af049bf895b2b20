"""Small facts about, and switches on, the calling process that several mechanisms need."""

from __future__ import annotations

import ctypes
import os

#: The C library, for the system calls Python does not wrap (errno kept for each call).
libc = ctypes.CDLL(None, use_errno=True)

PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39


def thread_count() -> int:
    """Threads in this process (Landlock and seccomp apply per thread unless synchronised)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        import threading

        return threading.active_count()


def set_no_new_privs() -> None:
    """prctl(PR_SET_NO_NEW_PRIVS): required before Landlock and seccomp; idempotent."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.restype = ctypes.c_int
    libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
    if libc.prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1:
        return
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_NO_NEW_PRIVS) failed: {os.strerror(err)}")
