"""A sandbox process's host pid is found even while its subtree moves to the sandbox's init.

When a run is accepted the supervisor kills its checkpoint, and the runner (with every child the
cell forked) is re-parented to the namespace's init. A walk of the tree that read the init's
children before the move and the checkpoint's after it saw none of that subtree: a cell's child
had no host pid (once in CI, right after the run returned). The walk below misses the subtree
once, as the kernel's can, and the pid must still be found."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from agenticraft.sandbox import workers
from agenticraft.sandbox.workers import WorkerHandle


@pytest.fixture
def child():
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.fixture
def handle():
    ours, theirs = socket.socketpair()
    pipes = [os.pipe(), os.pipe()]
    handle = WorkerHandle(os.getpid(), [ours.detach(), pipes[0][0], pipes[1][0]], "/nonexistent")
    yield handle
    handle.chan.close()
    theirs.close()
    for r, w in pipes:
        os.close(r)
        os.close(w)


def test_a_subtree_missed_by_one_walk_is_found_by_the_next(monkeypatch, handle, child):
    real = workers.descendants
    walks: list[int] = []

    def moving(pid: int) -> list[int]:  # the first walk races with the re-parenting
        walks.append(pid)
        return [] if len(walks) == 1 else real(pid)

    monkeypatch.setattr(workers, "descendants", moving)
    handle.init = os.getpid()  # (this process stands in for the init; its pids are its own)
    assert handle.host_pid(child) == child
    assert len(walks) == 2


def test_a_process_that_is_not_in_the_sandbox_has_no_host_pid(handle, child):
    handle.init = child  # (a tree with no children)
    assert handle.host_pid(child + 1_000_000) is None
