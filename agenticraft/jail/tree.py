"""Finding and killing a process tree without letting it slip away (freeze, then kill)."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterable


def children(pid: int) -> list[int]:
    """Direct children, from /proc/<pid>/task/<tid>/children (no scan of all of /proc)."""
    found: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:  # (os.open and one read: a session reads this on each cell's path)
        try:
            fd = os.open(f"/proc/{pid}/task/{tid}/children", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            found.extend(int(c) for c in os.read(fd, 1 << 16).split())
        except OSError:
            continue
        finally:
            os.close(fd)
    return found


def descendants(pid: int) -> list[int]:
    result: list[int] = []
    stack = [pid]
    while stack:
        for child in children(stack.pop()):
            result.append(child)
            stack.append(child)
    return result


def kill_tree(root: int, *, include_root: bool = True, spare: Iterable[int] = ()) -> int:
    """SIGSTOP every process under ``root`` until no new one appears, then SIGKILL them all.

    Freezing first means a fork bomb cannot outrun the walk. Returns how many were killed.
    """
    if root <= 0:
        return 0
    spared = set(spare)
    frozen: set[int] = set()
    if include_root:
        _signal(root, signal.SIGSTOP)
        frozen.add(root)
    for _ in range(1000):
        found = [p for p in descendants(root) if p not in frozen and p not in spared]
        if not found:
            break
        for pid in found:
            _signal(pid, signal.SIGSTOP)
        frozen.update(found)
    for pid in frozen:
        _signal(pid, signal.SIGKILL)
    return len(frozen)


def _signal(pid: int, sig: int) -> None:
    if pid > 0:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
