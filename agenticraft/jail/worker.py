"""The worker's main loop, inside the confined child: receive code, run it, report.

Sessions: before each run the live worker forks. The child runs the code; the parent waits as the
checkpoint. If the run ends normally the child tells the parent to exit and becomes the live
worker. If the child is killed (or hits a limit), the parent resumes with the state from before
the run: a rollback costs one fork, not a replay.

Undo (runs with ``keep_undo``, the kernel's cells): after such a run the checkpoint does not exit
but stays, waiting, as the state from before that run; ``{"op": "undo"}`` ends the live worker and
resumes it. One state is kept: the next ``keep_undo`` run replaces it, and after an undo there is
none until the next such run. Runs without ``keep_undo`` (completions, comm messages) leave it.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import io
import os
import signal
import socket
import sys
from typing import Any

from agenticraft.jail.confine.libc import PR_SET_CHILD_SUBREAPER, prctl
from agenticraft.jail.executors import EXECUTORS
from agenticraft.jail.explain import file_refusal
from agenticraft.wire import protocol
from agenticraft.wire.codec import to_safe
from agenticraft.wire.errors import ResourceLimitExceeded, SecurityViolation, quota_exceeded

_LIMIT_ERRNOS = {errno.EFBIG: "max_file_size_mb", errno.ENOMEM: "memory_mb"}


def _streams() -> None:
    for fd, name in ((1, "stdout"), (2, "stderr")):
        raw = io.FileIO(fd, "w", closefd=False)
        setattr(sys, name, io.TextIOWrapper(raw, encoding="utf-8", errors="backslashreplace",
                                            write_through=True))
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


class Worker:
    def __init__(self, chan: socket.socket, executor: str) -> None:
        self.chan = chan
        self.executor_name = executor
        self.executor: Any = None
        self.promote_fd: int | None = None
        self.run_id: int | None = None  # tags this run's events; None between runs

        #: Write end of the pipe the undo state (our parent, the previous checkpoint) waits on.
        self.undo_fd: int | None = None

    def serve(self, ready: dict[str, Any]) -> None:
        protocol.send(self.chan, {"ev": "ready", **ready})
        while True:
            try:
                msg = protocol.recv(self.chan)
            except protocol.ProtocolError:
                os._exit(3)
            if msg is None or msg.get("op") == "exit":
                _flush()
                os._exit(0)
            if msg.get("op") == "undo":
                self._undo()
                continue
            if msg.get("op") == "run":
                if msg.get("checkpoint") and not self._fork_runner(msg):
                    continue  # this process is the checkpoint and was just restored
                self._run(msg)

    def _undo(self) -> None:
        """End this live worker and let the undo state resume (it reports ``undone``)."""
        if self.undo_fd is None:
            protocol.send(self.chan, {"ev": "undo_refused"})
            return
        _flush()
        os.write(self.undo_fd, b"U")
        os._exit(0)

    def emit(self, data: dict[str, Any]) -> None:
        """Send an executor event (display data, an input request) to the supervisor now,
        tagged with the run it belongs to (between runs it has none: the host drops it)."""
        _flush()
        protocol.send(self.chan, {"ev": "event", "run": self.run_id, "data": data})

    def receive(self) -> dict[str, Any] | None:
        """Block for the supervisor's next message (an input reply, for example)."""
        return protocol.recv(self.chan)

    def _fork_runner(self, msg: dict[str, Any]) -> bool:
        """True in the runner; in the checkpoint, returns False after a rollback."""
        gc.freeze()
        shim = egress_shim_active()
        if shim is not None:
            shim.pause()  # the runner relays its own connections (threads do not fork)
        r, w = os.pipe()
        try:
            pid = os.fork()
        except OSError as exc:
            if shim is not None:
                shim.start()
            gc.unfreeze()
            os.close(r)
            os.close(w)
            protocol.send(self.chan, {"ev": "done", "run": msg["run"], "ok": False,
                                      "limit": {"limit": "max_processes",
                                                "detail": f"checkpoint fork failed: {exc}"}})
            return False
        keep_undo = bool(msg.get("keep_undo"))
        if pid == 0:
            os.close(r)
            if keep_undo and self.undo_fd is not None:
                os.close(self.undo_fd)  # the undo state's pipe stays with the checkpoint
                self.undo_fd = None
            gc.unfreeze()
            if shim is not None:
                shim.after_fork()
            prctl(PR_SET_CHILD_SUBREAPER, 1)
            self.promote_fd = w
            return True
        os.close(w)
        data = _read_byte(r)
        if data == b"P" and keep_undo:
            return self._hold_undo(r, pid)
        os.close(r)
        if data == b"P":
            os._exit(0)  # the runner is the live session now
        _, status = os.waitpid(pid, 0)
        gc.unfreeze()
        if shim is not None:
            shim.start()  # rolled back: this process is the live worker again
        protocol.send(self.chan, {"ev": "rolled_back", "run": msg["run"], "status": status})
        return False

    def _hold_undo(self, r: int, runner: int) -> bool:
        """The runner is the live session now; wait as the state from before its run until it
        asks for an undo (b"U": resume, False) or lets go (end of file: exit)."""
        if self.undo_fd is not None:
            os.close(self.undo_fd)  # the older undo state ends (it reads end of file)
            self.undo_fd = None
        data = _read_byte(r)
        os.close(r)
        if data != b"U":
            os._exit(0)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(runner, 0)
        gc.unfreeze()
        protocol.send(self.chan, {"ev": "undone", "pid": os.getpid()})
        return False

    def _run(self, msg: dict[str, Any]) -> None:
        run_id = self.run_id = msg["run"]
        if self.promote_fd is not None:  # a forked runner: tell the supervisor who runs
            protocol.send(self.chan, {"ev": "started", "run": run_id, "pid": os.getpid()})
        reply: dict[str, Any] = {"ev": "done", "run": run_id}
        keep = True
        try:
            # An interrupt that arrived early was held (blocked) until now: it is raised here,
            # inside the run, as KeyboardInterrupt, never in the worker's own code.
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
            if self.executor is None:
                self.executor = load_executor(self.executor_name)()
                if hasattr(self.executor, "attach"):
                    self.executor.attach(self)
            values = self.executor.run(msg["code"], msg)
            reply.update(ok=True, values=values)
        except ResourceLimitExceeded as exc:
            reply.update(ok=False, limit=_limit_frame(exc))
            keep = False
        except SecurityViolation as exc:
            reply.update(ok=False, violation={"message": str(exc), "lineno": exc.lineno,
                                              "construct": exc.construct})
            keep = False
        except MemoryError:
            reply.update(ok=False, limit={"limit": "memory_mb"})
            keep = False
        except BaseException as exc:  # the user's exception, SystemExit included, is a result
            limit = _LIMIT_ERRNOS.get(exc.errno) if isinstance(exc, OSError) else None
            if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:  # the private tmpfs is full
                quota = quota_exceeded((msg.get("limits") or {}).get("max_file_size_mb"))
                reply.update(ok=False, limit=_limit_frame(quota))
                keep = False
            elif limit is not None:  # RLIMIT_FSIZE / RLIMIT_AS refusals are limit violations
                reply.update(ok=False, limit={"limit": limit, "detail": str(exc)})
                keep = False
            else:
                reply.update(ok=False, error=self.executor.format_exception(exc)
                             if self.executor else {"ename": type(exc).__name__,
                                                    "evalue": str(exc), "traceback": ""})
                why = file_refusal(exc, msg.get("limits") or {})
                if why and isinstance(reply["error"], dict):
                    reply["error"]["evalue"] = f"{reply['error'].get('evalue', '')} ({why})"
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        _flush()
        self.run_id = None
        try:
            data = protocol.encode(reply)
        except (TypeError, ValueError) as exc:
            data = protocol.encode({"ev": "done", "run": run_id, "ok": False,
                                    "error": {"ename": "ResultError", "evalue": str(exc),
                                              "traceback": ""}})
        self.chan.sendall(data)
        if self.promote_fd is not None:
            if keep:
                os.write(self.promote_fd, b"P")
                if msg.get("keep_undo"):  # the checkpoint now waits on it as the undo state
                    self.undo_fd = self.promote_fd
                else:
                    os.close(self.promote_fd)
                self.promote_fd = None
            else:
                os._exit(0)  # hand the session back to the checkpoint


def egress_shim_active() -> Any:
    """The egress shim of this worker, if its profile has an allow-list."""
    module = sys.modules.get("agenticraft.jail.egress_shim")
    return module.active() if module is not None else None


def _limit_frame(exc: ResourceLimitExceeded) -> dict[str, Any]:
    return {"limit": exc.limit, "value": to_safe(exc.value), "allowed": to_safe(exc.allowed),
            "message": str(exc)}

def _read_byte(fd: int) -> bytes:
    while True:
        try:
            return os.read(fd, 1)
        except InterruptedError:
            continue


def load_executor(name: str) -> Any:
    """A built-in executor, or ``package.module:Class`` for one provided elsewhere (the kernel's
    IPython executor lives in agenticraft_kernel)."""
    if name in EXECUTORS:
        return EXECUTORS[name]
    module_name, _, attr = name.partition(":")
    import importlib
    return getattr(importlib.import_module(module_name), attr)


def main(chan_fd: int, executor: str, ready: dict[str, Any],
         egress: tuple[str, str] | None = None) -> None:
    """Entry point in the confined child (called by the zygote after ``confine``).
    ``egress``: (socket, key) of the host egress proxy of a ``network_access`` allow-list."""
    _streams()
    if egress:
        from agenticraft.jail import egress_shim
        ready["egress_port"] = egress_shim.install(*egress).port
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})  # unblocked only inside a run
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # oversize writes fail with EFBIG instead
    chan = socket.socket(fileno=chan_fd)
    chan.setblocking(True)
    Worker(chan, executor).serve(ready)
