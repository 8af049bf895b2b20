"""A PID namespace per sandbox: its own process numbers, its own ``/proc``, killed as a whole.

After ``unshare(CLONE_NEWPID)`` the caller stays where it was; its next child is process 1 of
the new namespace. A sandbox therefore runs as three processes:

- the **keeper** (the zygote's child, outside the namespace): waits for the init and exits with
  it. Killing it kills the sandbox: the init has it as parent-death signal source, and when the
  init dies the kernel kills every process of the namespace. It keeps the capabilities of the
  sandbox's user namespace (nothing inside can reach it: it is outside the PID namespace) and,
  with a writable working directory, serves the supervisor's requests to renew its overlay
  between cells (``mounts.renew``).
- the **init** (process 1 inside): builds the private root with a fresh ``/proc`` (a proc mount
  shows the PID namespace of the process that mounts it), forks the worker, drops its
  capabilities and only reaps children (a blank child prepared ahead, ``start_init_ahead``,
  forks init and worker before its profile is known: there the worker builds the root and
  the init moves into it). It is not the worker because a session's worker
  (the checkpoint) exits whenever a run is promoted, and the namespace must outlive that.
- the **worker** (process 2 inside) and everything it starts.

The supervisor sees host process numbers; the worker reports namespace ones (``started`` frames
of sessions). ``host_pid`` translates them from ``/proc/<pid>/status`` (NSpid).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
from collections.abc import Callable, Iterable
from typing import NoReturn

from agenticraft.jail.confine.libc import PR_SET_DUMPABLE, PR_SET_PDEATHSIG, prctl


def start_init(serve: tuple[int, Callable[[int], bool]] | None = None) -> int:
    """Fork process 1 of the PID namespace this process just unshared. Returns (in the init) its
    host pid, read from the host's ``/proc`` while that is still mounted. The caller (outside)
    becomes the keeper and never returns. ``serve``: a descriptor the keeper keeps and the
    function that answers one request on it (False: closed)."""
    keeper = os.getpid()
    init = os.fork()
    if init:
        _keep(init, serve)
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if not os.path.exists(f"/proc/{keeper}/stat"):  # the keeper died before the signal was armed
        os._exit(1)
    return int(os.readlink("/proc/self"))


def start_init_ahead() -> tuple[int, int]:
    """``start_init`` and ``start_worker`` before the private root exists (a blank child prepared
    ahead, ``apply.prepare``). Returns, in the worker, the init's host pid and a socket to the
    init: the worker builds the root, then hands it to the init (``hand_root``), which moves
    there while the worker confines itself on (``init_settled`` waits for that). The init
    holds nothing but that socket while it waits, and ends with its worker."""
    init_pid = start_init()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    worker = os.fork()
    if worker:
        theirs.close()
        _await_root(ours.detach())
        _reap_forever()
    ours.close()
    return init_pid, theirs.detach()


def hand_root(sock: int) -> None:
    """In a prepared worker, its root just built (still with capabilities, before anything of
    the sandbox runs): hand the init the new root. The init moves there while the worker
    confines itself on; ``init_settled`` waits for it before anything of the sandbox runs."""
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    chan = _chan(sock)
    try:
        socket.send_fds(chan, [b"r"], [root])
    finally:
        chan.detach()  # the descriptor stays open for ``init_settled``
        os.close(root)


def init_settled(sock: int) -> None:
    """Return once the init lives in the private root, without capabilities and not dumpable,
    as an init that built the root itself would (then close the socket to it)."""
    with _chan(sock) as chan:
        if chan.recv(1) != b"k":
            raise OSError("the PID namespace's init did not move into the private root")


def _chan(sock: int) -> socket.socket:
    return socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, fileno=sock)


def _await_root(sock: int) -> None:  # pragma: no cover - runs in the init
    """In the init prepared ahead: wait (holding nothing else) for the worker's new root, move
    there (``chroot``: the host's root is no longer this process's), drop every capability and
    say so. EOF: the worker was dropped before it got a profile; reaping ends the namespace."""
    from agenticraft.jail.confine import namespaces

    _quiet(sock)
    with socket.socket(fileno=sock) as chan:
        try:
            _msg, fds, _flags, _addr = socket.recv_fds(chan, 1, 1)
        except OSError:
            return
        if not fds:
            return
        os.fchdir(fds[0])
        os.chroot(".")
        os.chdir("/")
        for fd in fds:
            os.close(fd)
        _quiet(sock)  # its /dev/null is the private root's now
        namespaces.drop_capabilities()
        prctl(PR_SET_DUMPABLE, 0)
        with contextlib.suppress(OSError):  # the worker failed meanwhile: reaping ends it all
            chan.send(b"k")


def start_worker() -> None:
    """In the init: fork the worker and return in it; the init stays behind and only reaps."""
    worker = os.fork()
    if worker:
        _reap_forever()


def _quiet(keep: int = -1) -> None:
    """No descriptor of the sandbox stays open here (the worker's EOFs must not wait for us),
    but ``keep``."""
    devnull = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    if keep > 2:
        os.closerange(3, keep)
        os.closerange(keep + 1, 1 << 16)
    else:
        os.closerange(3, 1 << 16)


def _keep(init: int,
          serve: tuple[int, Callable[[int], bool]] | None) -> NoReturn:  # pragma: no cover
    _quiet(serve[0] if serve else -1)
    with contextlib.suppress(OSError):
        prctl(PR_SET_DUMPABLE, 0)
    if serve is not None:
        _serve_until_exit(init, *serve)
    try:
        _pid, status = os.waitpid(init, 0)
        code = os.waitstatus_to_exitcode(status)
    except ChildProcessError:
        code = 0
    os._exit(code if code >= 0 else 128 - code)


def _serve_until_exit(init: int, fd: int,
                      answer: Callable[[int], bool]) -> None:  # pragma: no cover - keeper
    """Answer requests on ``fd`` until the init exits (then return to reap it) or the other end
    closes it. Without pidfds (Linux < 5.3) nothing is served: the descriptor is closed."""
    try:
        pidfd = os.pidfd_open(init)
    except (AttributeError, OSError):
        os.close(fd)
        return
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    poller.register(fd, select.POLLIN)
    while True:
        try:
            ready = {got for got, _events in poller.poll()}
        except InterruptedError:
            continue
        if pidfd in ready:
            break
        if fd in ready and not answer(fd):
            break
    os.close(fd)
    os.close(pidfd)


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
