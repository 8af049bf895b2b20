"""Which limit a raw error from the operating system or a library really is.

Inside the sandbox a limit often surfaces as an ordinary error: numpy's ``OSError: 3000000
requested and 1310704 written`` (RLIMIT_FSIZE), ``RuntimeError: can't start new thread``
(pids.max / RLIMIT_NPROC: threads count), ``ImportError: ... failed to map segment from shared
object`` (no memory for a library). ``classify`` names the limit, so the cell ends with
``ResourceLimitExceeded`` saying which limit, its value and how to change it. One place for
this: the plain worker and the kernel's shell both use it.
"""

from __future__ import annotations

import errno
import re
from typing import Any

from agenticraft.jail.confine.mounts import terminals_full
from agenticraft.wire.errors import quota_exceeded

_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")
_NO_MEMORY = ("failed to map segment", "cannot allocate memory", "out of memory")
_NO_THREAD = ("can't start new thread", "can not start new thread")

DETAILS = {
    "file": "a write went past the size one file may have (max_file_size_mb)",
    "scratch": "the sandbox's scratch space is full (its quota follows max_file_size_mb)",
    "thread": "threads count towards max_processes: no new thread or process could start",
    "stack": "a new thread's stack did not fit in memory (memory_mb)",
    "process": "no new process could start (max_processes; threads count too)",
    "memory": "not enough memory for an allocation or a library (memory_mb)",
}


def classify(exc: BaseException | None) -> tuple[str, str] | None:
    """(limit, detail) when ``exc`` (or what caused it) is a limit, else None."""
    seen = 0
    while exc is not None and seen < 10:
        found = _one(exc)
        if found is not None:
            return found
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def _one(exc: BaseException) -> tuple[str, str] | None:
    if isinstance(exc, MemoryError):
        return "memory_mb", DETAILS["memory"]
    text = str(exc).lower()
    if isinstance(exc, OSError):
        if exc.errno == errno.EFBIG or _SHORT_WRITE.search(text):
            return "max_file_size_mb", DETAILS["file"]
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            if exc.errno == errno.ENOSPC and exc.filename is None and terminals_full():
                return None  # no terminal left, not the write quota (explain.file_refusal)
            return "max_file_size_mb", DETAILS["scratch"]
        if exc.errno == errno.ENOMEM:
            return "memory_mb", DETAILS["memory"]
        if exc.errno == errno.EAGAIN and "fork" in text:
            return "max_processes", DETAILS["process"]
    if isinstance(exc, RuntimeError) and any(t in text for t in _NO_THREAD):
        return "max_processes", DETAILS["thread"]
    if isinstance(exc, (ImportError, OSError)) and any(t in text for t in _NO_MEMORY):
        return "memory_mb", DETAILS["memory"]
    return None


def limit_info(exc: BaseException, limits: dict[str, Any]) -> dict[str, Any] | None:
    """The worker's ``limit`` reply for ``exc``, or None when it is not a limit."""
    found = classify(exc)
    if found is None:
        return None
    limit, detail = found
    if detail == DETAILS["thread"] and not _near_thread_limit(limits):
        limit, detail = "memory_mb", DETAILS["stack"]  # far below max_processes: memory it was
    if detail == DETAILS["scratch"]:  # the private tmpfs (the total write quota) is full
        quota = quota_exceeded(limits.get("max_file_size_mb"))
        return {"limit": quota.limit, "value": quota.value, "allowed": quota.allowed}
    return {"limit": limit, "value": None, "allowed": limits.get(limit),
            "detail": f"{detail} ({type(exc).__name__}: {str(exc)[:200]})"}


def _near_thread_limit(limits: dict[str, Any]) -> bool:
    """Whether this process's threads are near max_processes (else a failed thread start was
    its stack's memory). Threads of other processes of the session are not seen: near = 3/4."""
    import threading
    allowed = limits.get("max_processes")
    if not isinstance(allowed, int):
        return True
    return threading.active_count() + 1 >= allowed * 3 // 4
