"""A PID namespace per sandbox: its own process numbers, its own ``/proc``, killed as a whole.

After ``unshare(CLONE_NEWPID)`` the caller stays where it was; its next child is process 1 of
the new namespace. A sandbox therefore runs as three processes:

- the **keeper** (the zygote's child, outside the namespace): waits for the init and exits with
  it. Killing it kills the sandbox: the init has it as parent-death signal source, and when the
  init dies the kernel kills every process of the namespace.
- the **init** (process 1 inside): builds the private root with a fresh ``/proc`` (a proc mount
  shows the PID namespace of the process that mounts it), forks the worker, drops its
  capabilities and only reaps children. It is not the worker because a session's worker
  (the checkpoint) exits whenever a run is promoted, and the namespace must outlive that.
- the **worker** (process 2 inside) and everything it starts.

The supervisor sees host process numbers; the worker reports namespace ones (``started`` frames
of sessions). ``host_pid`` translates them from ``/proc/<pid>/status`` (NSpid).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterable
from typing import NoReturn

from agenticraft.jail.confine.libc import PR_SET_DUMPABLE, PR_SET_PDEATHSIG, prctl


def start_init() -> int:
    """Fork process 1 of the PID namespace this process just unshared. Returns (in the init) its
    host pid, read from the host's ``/proc`` while that is still mounted. The caller (outside)
    becomes the keeper and never returns."""
    keeper = os.getpid()
    init = os.fork()
    if init:
        _keep(init)
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if not os.path.exists(f"/proc/{keeper}/stat"):  # the keeper died before the signal was armed
        os._exit(1)
    return int(os.readlink("/proc/self"))


def start_worker() -> None:
    """In the init: fork the worker and return in it; the init stays behind and only reaps."""
    worker = os.fork()
    if worker:
        _reap_forever()


def _quiet() -> None:
    """No descriptor of the sandbox stays open here (the worker's EOFs must not wait for us)."""
    devnull = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.closerange(3, 1 << 16)


def _keep(init: int) -> NoReturn:  # pragma: no cover - runs in the keeper
    _quiet()
    with contextlib.suppress(OSError):
        prctl(PR_SET_DUMPABLE, 0)
    try:
        _pid, status = os.waitpid(init, 0)
        code = os.waitstatus_to_exitcode(status)
    except ChildProcessError:
        code = 0
    os._exit(code if code >= 0 else 128 - code)


def _reap_forever() -> NoReturn:  # pragma: no cover - runs in the init
    from agenticraft.jail.confine import namespaces

    _quiet()
    with contextlib.suppress(OSError):
        namespaces.drop_capabilities()
        prctl(PR_SET_DUMPABLE, 0)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)
    while True:
        try:
            os.wait()
        except ChildProcessError:  # everything of the sandbox is gone
            os._exit(0)


def ns_pid(host: int) -> int | None:
    """The innermost (namespace) pid of host process ``host``, from its NSpid line."""
    try:
        with open(f"/proc/{host}/status") as fh:
            for line in fh:
                if line.startswith("NSpid:"):
                    return int(line.split()[-1])
    except (OSError, ValueError):
        return None
    return None


def host_pid(inner: int, candidates: Iterable[int]) -> int | None:
    """The host pid, among ``candidates``, of the process the namespace calls ``inner``."""
    for pid in candidates:
        if ns_pid(pid) == inner:
            return pid
    return None
