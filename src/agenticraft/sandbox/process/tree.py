"""Finding and killing a process tree without letting it slip away (freeze, then kill)."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterable

import psutil


def descendants(pid: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def kill_tree(root: int, *, include_root: bool = True, spare: Iterable[int] = ()) -> int:
    """SIGSTOP every process under ``root`` until no new one appears, then SIGKILL them all.

    Freezing first means a fork bomb cannot outrun the walk. Returns how many were killed.
    """
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
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)
