"""Parent side: at most a few of one user's kernels start their sandbox at the same time.

Starting a sandbox is CPU-heavy (the zygote imports IPython and ipykernel before it says
hello) and the engine gives a zygote 30 s to answer. When many kernels start at once (a
JupyterHub rush, a test farm, ``bench_scale.py``'s 200 kernels on two cores) every zygote gets a
sliver of the CPU, most miss their 30 s and their kernels' cells fail ("the zygote did not
answer": 130 of 200 in one run here). Starting them a few at a time costs the same CPU in total,
and each start gets the CPU it needs.

The gate is ``slots`` lock files (``flock``) in a directory of the user's own; a kernel holds one
while its sandbox starts. The kernel answers ``kernel_info`` meanwhile (the sandbox starts in the
background); its first cell waits for the sandbox, as before. The lock goes with the process, so
a kernel that dies holding one frees it. Nothing here is a security boundary: the gate only
spreads the load, and a directory that is not the user's own means no gate.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import stat
import tempfile
import threading
from collections.abc import AsyncIterator
from pathlib import Path


def gate_dir() -> Path:
    """The user's runtime directory (``XDG_RUNTIME_DIR``), else the temp directory."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return Path(base) / f"agenticraft-start-{os.getuid()}"


class StartGate:
    """``async with gate.slot():`` waits for one of ``slots`` start slots (0: no gate)."""

    def __init__(self, slots: int, directory: Path | None = None) -> None:
        self.slots = slots
        self.directory = directory or gate_dir()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        fd = await self._acquire() if self.slots > 0 else None
        try:
            yield
        finally:
            if fd is not None:
                os.close(fd)  # releases the lock

    def _usable(self) -> bool:
        """The directory exists, is a directory (not a link) of this user, closed to others."""
        with contextlib.suppress(FileExistsError):
            os.mkdir(self.directory, 0o700)
        info = os.lstat(self.directory)
        return (stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()
                and not info.st_mode & 0o077)

    def _open(self, index: int) -> int:
        return os.open(self.directory / f"slot-{index}.lock",
                       os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)

    async def _acquire(self) -> int | None:
        """A locked slot's descriptor; None when the gate cannot be used (no gate then)."""
        try:
            if not self._usable():
                return None
            fds = [self._open(i) for i in range(self.slots)]
        except OSError:
            return None
        for fd in fds:  # a free slot: take it
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            for other in fds:
                if other != fd:
                    os.close(other)
            return fd
        # All taken: wait for whichever frees first. One thread per slot blocks in flock (it has
        # no asynchronous form; daemon threads never hold up the kernel's exit); the first to
        # get its slot wins, a slot got later (or after a cancel) is let go at once.
        loop = asyncio.get_running_loop()
        won: asyncio.Future[int] = loop.create_future()

        def claim(fd: int) -> None:
            if won.done():
                os.close(fd)
            else:
                won.set_result(fd)

        def wait(fd: int) -> None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:
                os.close(fd)
                return
            try:
                loop.call_soon_threadsafe(claim, fd)
            except RuntimeError:  # the loop is gone: the kernel is exiting
                os.close(fd)

        for fd in fds:
            threading.Thread(target=wait, args=(fd,), name="agenticraft-start-gate",
                             daemon=True).start()
        return await won
