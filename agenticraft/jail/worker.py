"""The worker's main loop, inside the confined child: receive code, run it, report.

Sessions: before each run the live worker forks. The child runs the code; the parent waits as the
checkpoint. If the run ends normally the supervisor kills the checkpoint (or keeps it, stopped, as
the session's undo state) and the child is the live worker. If the child is killed (or hits a
limit), the parent resumes with the state from before the run: a rollback costs one fork, not a
replay. An undo is the same resumption of a kept checkpoint, after the supervisor killed the rest.

The fork for the next run is made ahead of time, right after a kept run has sent its reply
(``_prefork``: off the caller's path, while the user reads the output), when nothing can change
the state between runs: the live process has no other thread. Its child waits for the next run;
the parent is that run's checkpoint already; while it waits, the runner copies the pages the last
run wrote (``prefault``), so that their copy-on-write faults are not on the run's path either.
With another thread alive the fork stays at the start
of the run, as above (a thread may change the state until then).
"""

from __future__ import annotations

import contextlib
import gc
import io
import os
import queue
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from agenticraft.jail import prefault
from agenticraft.jail.confine.libc import PR_SET_CHILD_SUBREAPER, prctl
from agenticraft.jail.executors import EXECUTORS
from agenticraft.jail.explain import file_refusal
from agenticraft.jail.limit_errors import limit_info
from agenticraft.wire import protocol
from agenticraft.wire.codec import to_safe
from agenticraft.wire.errors import ResourceLimitExceeded, SecurityViolation


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
        self.runner = False  # a session's forked runner (its checkpoint waits for it)
        self.run_id: int | None = None  # tags this run's events; None between runs
        #: The working directory as of the last run's end, by path. With ``leave`` in a run
        #: frame the session's processes stand in ``/`` between runs, so nothing of theirs
        #: holds the overlay the supervisor renews before the next run (its space is freed at
        #: once); the next run enters the directory anew, by path: the fresh overlay.
        self.cwd = _getcwd() or "/"
        self.left = False
        #: A runner forked ahead of time (``_prefork``): the pipe on which it tells its
        #: checkpoint the id of the run it got, before that run's code starts.
        self.announce: int | None = None
        #: Which pages a run writes, so that the runner forked ahead copies them while idle.
        self.pages = prefault.Learner()
        self.memory_mb = 0.0  # the last run's memory limit (bounds that copy)
        self._send_lock = threading.Lock()  # frames from several threads never interleave
        self._kept: list[dict[str, Any]] = []  # events of no run, for the next run (``emit``)
        #: Once ``listen`` was called a thread reads the channel; the main thread's frames
        #: come through this queue (None: the main thread reads the channel itself).
        self._inbox: queue.SimpleQueue[dict[str, Any] | None] | None = None

    def serve(self, ready: dict[str, Any], warm: bool = True) -> None:
        if warm and self.executor_name == "exec":
            _warm_up(self)
        protocol.send(self.chan, {"ev": "ready", **ready})
        poll_first = self.executor_name == "restricted"
        while True:
            if poll_first:
                _poll_briefly(self.chan)
            msg = self.receive()
            if msg is None or msg.get("op") == "exit":
                _flush()
                os._exit(0)
            if msg.get("op") == "run":
                if self.left or msg.get("remounted"):  # the checkpoint too (rollbacks)
                    with contextlib.suppress(OSError):
                        os.chdir(self.cwd)
                    self.left = False
                # A process whose channel a thread reads cannot fork a runner (the thread
                # would not be in it): it runs in place (a debugger session's runs do).
                forked = bool(msg.get("checkpoint")) and self._inbox is None
                if self.announce is not None:  # a runner forked ahead of time for this run
                    # (a run in place, unforked: the supervisor ended the checkpoint and made
                    # this process the live one; it says no run id)
                    self._announce(msg if forked else None)
                elif forked and not self._fork_runner(msg):
                    continue  # this process is the checkpoint and was just restored
                self._run(msg, forked)

    def emit(self, data: dict[str, Any], keep: bool = False) -> None:
        """Send an executor event (display data, an input request) to the supervisor now,
        tagged with the run it belongs to (between runs it has none: the host drops it, or,
        with ``keep``, it is sent when the next run starts)."""
        _flush()
        with self._send_lock:
            if self.run_id is None and keep:
                self._kept.append(data)
                return
            protocol.send(self.chan, {"ev": "event", "run": self.run_id, "data": data})

    def _send(self, frame: dict[str, Any]) -> None:
        with self._send_lock:
            protocol.send(self.chan, frame)

    def _begin_run(self, run_id: int, forked: bool) -> None:
        """This run's id tags events from now on; events kept for it go first."""
        with self._send_lock:
            self.run_id = run_id
            if forked:  # a forked runner: tell the supervisor the run has started
                protocol.send(self.chan, {"ev": "started", "run": run_id, "pid": os.getpid()})
            kept, self._kept = self._kept, []
            for data in kept:
                protocol.send(self.chan, {"ev": "event", "run": run_id, "data": data})

    def receive(self) -> dict[str, Any] | None:
        """Block for the supervisor's next message (an input reply, for example)."""
        if self._inbox is not None:
            msg = self._inbox.get()
            if msg is not None and msg.get("op") == "protocol_error":
                os._exit(3)
            return msg
        try:
            return protocol.recv(self.chan)
        except protocol.ProtocolError:
            os._exit(3)

    def listen(self, on_control: Callable[[dict[str, Any]], None]) -> None:
        """From now on a thread reads the channel: ``control`` frames go to ``on_control`` at
        once, even while the main thread is held inside a run (a debugger stopped at a
        breakpoint); every other frame reaches the main thread, in order, as before. Runs of
        this process are no longer forked (see ``serve``)."""
        if self._inbox is not None:
            return
        inbox: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self._inbox = inbox

        def read() -> None:
            while True:
                try:
                    msg = protocol.recv(self.chan)
                except protocol.ProtocolError:
                    inbox.put({"op": "protocol_error"})
                    return
                if msg is not None and msg.get("op") == "control":
                    on_control(msg)
                    continue
                inbox.put(msg)
                if msg is None or msg.get("op") == "exit":
                    return

        start_sandbox_thread(threading.Thread(target=read, name="agenticraft-control",
                                              daemon=True))

    def _fork_runner(self, msg: dict[str, Any]) -> bool:
        """True in the runner; in the checkpoint, returns False after a rollback.

        The checkpoint only waits for its runner to end. It never decides that the run
        succeeded: when the supervisor accepts the run, it kills the checkpoint itself (the
        runner then is the live session). So nothing the runner writes can promote it.
        """
        gc.freeze()
        shim = egress_shim_active()
        if shim is not None:
            shim.pause()  # the runner relays its own connections (threads do not fork)
        try:
            pid = os.fork()
        except OSError as exc:
            if shim is not None:
                shim.start()
            gc.unfreeze()
            protocol.send(self.chan, {"ev": "rolled_back", "run": msg["run"], "status": None,
                                      "fork_error": str(exc)})
            return False
        if pid == 0:
            self._send_lock = threading.Lock()  # whoever held it is not in this process
            gc.unfreeze()
            if shim is not None:
                shim.after_fork()
            prctl(PR_SET_CHILD_SUBREAPER, 1)
            self.runner = True
            self.pages.forget()
            return True
        if msg.get("leave"):  # it may be kept, stopped, as the undo state: never in the way
            self._leave()
        # While it waits the checkpoint adopts no orphans: it may be kept, stopped, as the
        # session's undo state, and could not reap them. They go to the init (or the zygote),
        # which reaps them; the unit still holds them. It adopts again once it is live.
        if self.runner:
            prctl(PR_SET_CHILD_SUBREAPER, 0)
        status = _wait_for(pid)
        if self.runner:
            prctl(PR_SET_CHILD_SUBREAPER, 1)
        gc.unfreeze()
        if shim is not None:
            shim.start()  # rolled back: this process is the live worker again
        protocol.send(self.chan, {"ev": "rolled_back", "run": msg["run"], "status": status})
        return False

    def _leave(self) -> None:
        with contextlib.suppress(OSError):
            os.chdir("/")
            self.left = True

    def _prefork(self) -> None:
        """Right after this runner's run was kept (its reply sent): fork the next run's runner
        now and wait as its checkpoint, as ``_fork_runner`` does when the run comes. Only with
        no other thread alive (none can change the state, or fork, until the run comes).

        The supervisor finds this runner as the checkpoint's youngest child: it adopts no
        orphan from before the fork on (subreaper off first), and nothing else forks here.
        The runner says which run it got on a pipe, before that run's code starts, so that a
        rollback names the run."""
        written = self.pages.written()
        prctl(PR_SET_CHILD_SUBREAPER, 0)
        ours, theirs = os.pipe2(os.O_CLOEXEC)
        gc.freeze()
        try:
            pid = os.fork()
        except OSError:  # the next run forks when it comes (and reports a failure then)
            gc.unfreeze()
            os.close(ours)
            os.close(theirs)
            prctl(PR_SET_CHILD_SUBREAPER, 1)
            protocol.send(self.chan, {"ev": "forked", "failed": True})
            return
        if pid == 0:
            os.close(ours)
            gc.unfreeze()
            prctl(PR_SET_CHILD_SUBREAPER, 1)
            self.announce = theirs
            protocol.send(self.chan, {"ev": "forked"})  # (see Supervisor._settle_prefork)
            self.pages.begin(written, self.chan, self.memory_mb)
            return  # back to the loop, waiting for the next run
        os.close(theirs)
        status = _wait_for(pid)
        try:
            said = os.read(ours, 32)
        except OSError:
            said = b""
        os.close(ours)
        prctl(PR_SET_CHILD_SUBREAPER, 1)
        gc.unfreeze()
        run_id = int(said) if said.isdigit() else None  # None: it died before any run
        protocol.send(self.chan, {"ev": "rolled_back", "run": run_id, "status": status})

    def _announce(self, msg: dict[str, Any] | None) -> None:
        """In a runner forked ahead of time: tell the checkpoint which run this is (None: a
        run in place, after which this process is the live one; nothing to tell)."""
        fd, self.announce = self.announce, None
        assert fd is not None
        if msg is not None:
            with contextlib.suppress(OSError):
                os.write(fd, str(int(msg.get("run") or 0)).encode())
        os.close(fd)

    def _run(self, msg: dict[str, Any], forked: bool = False) -> None:
        run_id = msg["run"]
        self.memory_mb = float((msg.get("limits") or {}).get("memory_mb") or 0)
        self._begin_run(run_id, forked)
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
        except BaseException as exc:  # the user's exception, SystemExit included, is a result
            limit = limit_info(exc, msg.get("limits") or {})
            if limit is not None:  # a raw error that is really a limit (see limit_errors)
                reply.update(ok=False, limit=limit)
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
        with self._send_lock:
            self.run_id = None
        self.cwd = _getcwd() or self.cwd
        if msg.get("leave"):
            self._leave()
        prefork = keep and forked and bool(msg.get("prefork")) and _may_prefork()
        if prefork:  # (tells the supervisor where to find the next runner)
            reply["prefork"] = True
        try:
            data = protocol.encode(reply)
        except (TypeError, ValueError) as exc:
            data = protocol.encode({"ev": "done", "run": run_id, "ok": False,
                                    "error": {"ename": "ResultError", "evalue": str(exc),
                                              "traceback": ""}})
        with self._send_lock:
            self.chan.sendall(data)
        if forked and not keep:
            os._exit(0)  # hand the session back to the checkpoint
        if prefork:
            self._prefork()


def _warm_up(worker: Worker) -> None:
    """Before the worker says ready (no sandboxed code has run yet): go once through a whole
    run (receive, compile, exec, reply) on a throwaway socket pair and executor. A worker is a
    fresh fork: its first run otherwise pays the copy-on-write faults of every page that path
    touches, and the interpreter's first specialisation of its code, on the caller's path
    (~1 ms here; bench_confine.py). Only for the ``exec`` executor, whose state this cannot
    change (it is made anew afterwards)."""
    chan, executor, runner = worker.chan, worker.executor, worker.runner
    ours, theirs = socket.socketpair()
    try:
        worker.chan, worker.executor, worker.runner = ours, None, False
        theirs.sendall(protocol.encode({"op": "run", "run": 0, "checkpoint": False, "limits": {},
                                        "code": "result = sum([1, 2, 3])"}))
        worker._run(protocol.recv(ours) or {})
        protocol.recv(theirs)
    finally:
        worker.chan, worker.executor, worker.runner = chan, executor, runner
        ours.close()
        theirs.close()


def _wait_for(pid: int) -> int:
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except InterruptedError:
            continue


def _may_prefork() -> bool:
    """The next run's fork may be made now: no other thread (native ones counted too) could
    change the state or fork until that run comes, and no egress shim relays connections."""
    # (threading's count, not _thread._count(): Python 3.11 keeps counting, in a forked child,
    # the threads its parent had.)
    if threading.active_count() > 1 or egress_shim_active() is not None:
        return False
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


def _getcwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:  # in a detached overlay, or deleted
        return None


def _poll_briefly(chan: socket.socket, seconds: float = 0.0003) -> None:
    """Poll the channel for up to ``seconds`` before blocking on it. A warm restricted worker
    serves short runs back to back, and waking a process blocked in recv costs ~40 us on a
    virtual machine (the idle vCPU halts): polling first took the restricted round trip from
    138-164 us to 92-107 us here (bench_restricted.py, same session). At most 0.3 ms of CPU
    after each run, inside the sandbox; then the worker blocks as before."""
    poller = select.poll()
    poller.register(chan, select.POLLIN)
    end = time.monotonic() + seconds
    while not poller.poll(0) and time.monotonic() < end:
        pass


def start_sandbox_thread(thread: threading.Thread) -> None:
    """Start one of the worker's own threads. It is not the user's: a debugger (pydevd)
    neither traces nor lists it (as ipykernel marks its IOPub and control threads). It starts
    with SIGINT blocked (a thread inherits its creator's mask, and one started inside a run
    has it unblocked), so an interrupt is only ever taken by the main thread inside a run."""
    thread.pydev_do_not_trace = True  # type: ignore[attr-defined]
    thread.is_pydev_daemon_thread = True  # type: ignore[attr-defined]
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def egress_shim_active() -> Any:
    """The egress shim of this worker, if its profile has an allow-list."""
    module = sys.modules.get("agenticraft.jail.egress_shim")
    return module.active() if module is not None else None


def _limit_frame(exc: ResourceLimitExceeded) -> dict[str, Any]:
    return {"limit": exc.limit, "value": to_safe(exc.value), "allowed": to_safe(exc.allowed),
            "message": str(exc), "detail": getattr(exc, "detail", None)}


def load_executor(name: str) -> Any:
    """A built-in executor, or ``package.module:Class`` for one provided elsewhere (the kernel's
    IPython executor lives in agenticraft_kernel)."""
    if name in EXECUTORS:
        return EXECUTORS[name]
    module_name, _, attr = name.partition(":")
    import importlib
    return getattr(importlib.import_module(module_name), attr)


def main(chan_fd: int, executor: str, ready: dict[str, Any],
         egress: tuple[str, str] | None = None, warm: bool = True) -> None:
    """Entry point in the confined child (called by the zygote after ``confine``).
    ``egress``: (socket, key) of the host egress proxy of a ``network_access`` allow-list.
    ``warm``: go once through a throwaway run before saying ready (``_warm_up``): for a
    worker made ahead of its run; one a caller waits for starts at once."""
    _streams()
    if egress:
        from agenticraft.jail import egress_shim
        ready["egress_port"] = egress_shim.install(*egress).port
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})  # unblocked only inside a run
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # oversize writes fail with EFBIG instead
    chan = socket.socket(fileno=chan_fd)
    chan.setblocking(True)
    Worker(chan, executor).serve(ready, warm)
