"""The trusted side of the process sandbox: starts the zygote, runs code in workers, and
enforces what a worker cannot be trusted to enforce on itself (wall clock, RSS, CPU share,
output volume), killing the whole process tree on a violation. Usage is measured here, never
taken from the worker.
"""

from __future__ import annotations

import asyncio
import codecs
import concurrent.futures
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from agenticraft.jail.tree import descendants, kill_tree
from agenticraft.sandbox import leftovers
from agenticraft.sandbox.profile import PACKAGE_ROOT
from agenticraft.sandbox.result import Output
from agenticraft.wire import protocol
from agenticraft.wire.errors import SandboxError, SandboxUnavailable
from agenticraft.wire.limits import ResourceLimits

MB = 1024 * 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
ENV_ALLOW = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
#: Executor events that steer the run rather than show output: exempt from max_output_bytes.
CONTROL_EVENTS = frozenset({"input_request", "cell_started"})
SCRATCH_FACTOR = 4  # total scratch usage may be at most this many times max_file_size_mb
#: Zygotes are started from this one long-lived thread: the zygote's parent-death signal fires
#: when the *thread* that started it exits, so a short-lived executor thread would kill it.
LAUNCHER = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                 thread_name_prefix="agenticraft-launcher")


class Zygote:
    """Handle on the zygote process (one per supervisor)."""

    def __init__(self, disabled: frozenset[str], preload: tuple[str, ...] = ()) -> None:
        self.disabled = disabled
        self.preload = preload
        leftovers.reap()  # what sandboxes of dead owners left (a SIGKILLed kernel, a crash)
        self.scratch_root = tempfile.mkdtemp(prefix=leftovers.scratch_prefix())
        os.chmod(self.scratch_root, 0o700)
        self._lock = threading.Lock()
        self.proc: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        self.mechanisms: dict[str, Any] = {}

    def start(self) -> None:
        os.makedirs(self.scratch_root, 0o700, exist_ok=True)  # a previous zygote removed it
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {k: v for k, v in os.environ.items() if k in ENV_ALLOW}
        env["PYTHONPATH"] = PACKAGE_ROOT  # -I ignores it; kept for clarity in ps output
        code = ("import sys; sys.path.insert(0, sys.argv.pop(1)); "
                "from agenticraft.jail.zygote import main; main()")
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-c", code, PACKAGE_ROOT, str(child.fileno()),
             ",".join(sorted(self.disabled)), ",".join(self.preload), self.scratch_root],
            pass_fds=[child.fileno()], env=env, cwd="/", stdin=subprocess.DEVNULL,
            start_new_session=True)
        child.close()
        self.sock = parent
        hello, _ = self._recv(timeout=30)
        if hello.get("ev") != "hello":
            raise SandboxUnavailable("process", [f"zygote failed to start: {hello}"])
        self.mechanisms = hello["mechanisms"]

    def _recv(self, timeout: float | None = None) -> tuple[dict[str, Any], list[int]]:
        assert self.sock is not None
        self.sock.settimeout(timeout)
        try:
            data, fds, _flags, _addr = socket.recv_fds(self.sock, 1 << 20, 4)
        except TimeoutError:
            raise SandboxError("the zygote did not answer") from None
        if not data:
            raise SandboxError("the zygote exited")
        return json.loads(data), fds

    def spawn(self, profile: dict[str, Any], prefork: bool,
              session: bool = False) -> tuple[dict[str, Any], list[int]]:
        with self._lock:
            if self.proc is None or self.proc.poll() is not None:
                LAUNCHER.submit(self.start).result()
            assert self.sock is not None
            self.sock.send(json.dumps({"op": "spawn", "profile": profile, "prefork": prefork,
                                       "session": session}).encode())
            reply, fds = self._recv(timeout=30)
        if not reply.get("ok"):
            raise SandboxError(f"the zygote could not start a worker: {reply.get('error')}")
        return reply, fds

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                kill_tree(self.proc.pid)
                self.proc.wait()
            self.proc = None
        shutil.rmtree(self.scratch_root, ignore_errors=True)

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else -1


@dataclasses.dataclass
class RunOutcome:
    """What happened in one run, as the supervisor saw it."""

    frame: dict[str, Any] | None = None   # the worker's "done" frame, if any
    violation: tuple[str, Any, Any] | None = None  # (limit, value, allowed) seen by the supervisor
    crashed: str | None = None             # why the worker vanished or misbehaved
    rolled_back: bool = False
    interrupted: bool = False
    truncated: bool = False
    stdout: str = ""
    stderr: str = ""
    outputs: list[Output] = dataclasses.field(default_factory=list)
    usage: dict[str, Any] = dataclasses.field(default_factory=dict)
    wall: float = 0.0


class OutputSink:
    """Collects a run's stdout/stderr up to the cap; past it, one marker and then discard."""

    def __init__(self, cap: int, on_output: Callable[[Output], Any] | None) -> None:
        self.cap = cap
        self.total = 0
        self.truncated = False
        self.on_output = on_output
        self.parts: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self.outputs: list[Output] = []
        self._decoders: dict[str, Any] = {}

    def feed(self, name: str, data: bytes) -> None:
        if self.truncated:
            self.total += len(data)
            return
        room = self.cap - self.total
        self.total += len(data)
        if len(data) > room or room <= 0:
            data = data[:max(room, 0)]
            self.truncated = True
        dec = self._decoders.setdefault(name, codecs.getincrementaldecoder("utf-8")("replace"))
        text = dec.decode(data)
        if self.truncated:
            text += (f"\n[output truncated: more than {self.cap} bytes (max_output_bytes); "
                     "the rest was discarded]\n")
        if text:
            self._emit(name, text)

    def admit(self, size: int) -> bool:
        """Count a non-stream output (display data) against the cap; False once over it."""
        if self.truncated:
            return False
        self.total += size
        if self.total > self.cap:
            self.feed("stderr", b"")  # emits the truncation marker once
            return False
        return True

    def _emit(self, name: str, text: str) -> None:
        self.parts[name].append(text)
        item = Output(name, text)
        self.outputs.append(item)
        if self.on_output is not None:
            self.on_output(item)


class WorkerHandle:
    """A worker process as the supervisor holds it: pid, channel, output pipes, scratch."""

    def __init__(self, pid: int, fds: list[int], scratch: str) -> None:
        self.pid = pid          # the worker (for a session: the live state holder)
        self.session_id = pid   # the worker called setsid(): its descendants keep this id
        self.chan = socket.socket(fileno=fds[0])
        self.chan.setblocking(False)
        self.out_fd, self.err_fd = fds[1], fds[2]
        for fd in (self.out_fd, self.err_fd):
            os.set_blocking(fd, False)
        self.scratch = scratch
        self.frames = protocol.FrameBuffer()
        self.pending: list[dict[str, Any]] = []
        self.alive = True
        self.ready: dict[str, Any] = {}
        self.sink: OutputSink | None = None
        self._pipe_loop: asyncio.AbstractEventLoop | None = None

    async def recv(self) -> dict[str, Any] | None:
        """Next frame, or None at end of stream. Raises ProtocolError on garbage."""
        loop = asyncio.get_running_loop()
        while not self.pending:
            data = await loop.sock_recv(self.chan, 1 << 20)
            if not data:
                return None
            self.pending.extend(self.frames.feed(data))
        return self.pending.pop(0)

    def send(self, message: dict[str, Any]) -> None:
        data = protocol.encode(message)
        try:  # the common case: the whole frame fits in the socket buffer at once
            sent = self.chan.send(data)
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            self.chan.setblocking(True)
            try:
                self.chan.sendall(data[sent:])
            finally:
                self.chan.setblocking(False)

    def watch_pipes(self, loop: asyncio.AbstractEventLoop, sink: OutputSink) -> None:
        """Route the output pipes to ``sink`` (readers stay registered across runs)."""
        self.sink = sink
        if self._pipe_loop is loop:
            return
        self.unwatch_pipes()
        for fd, name in ((self.out_fd, "stdout"), (self.err_fd, "stderr")):
            loop.add_reader(fd, self._pump, fd, name)
        self._pipe_loop = loop

    def unwatch_pipes(self) -> None:
        loop, self._pipe_loop = self._pipe_loop, None
        if loop is not None and not loop.is_closed():
            for fd in (self.out_fd, self.err_fd):
                with contextlib.suppress(OSError, ValueError):
                    loop.remove_reader(fd)

    def _pump(self, fd: int, name: str) -> None:
        try:
            data = os.read(fd, 1 << 16)
        except (BlockingIOError, OSError):
            return
        if not data:
            with contextlib.suppress(OSError, ValueError):
                asyncio.get_running_loop().remove_reader(fd)
            return
        if self.sink is not None:
            self.sink.feed(name, data)
        # between runs (a background thread printing) output has no run to go to: dropped

    def drain(self, sink: OutputSink) -> None:
        for fd, name in ((self.out_fd, "stdout"), (self.err_fd, "stderr")):
            while True:
                try:
                    data = os.read(fd, 1 << 16)
                except (BlockingIOError, OSError):
                    break
                if not data:
                    break
                sink.feed(name, data)

    def close(self) -> None:
        self.alive = False
        self.unwatch_pipes()
        with contextlib.suppress(OSError):
            self.chan.close()
        for fd in (self.out_fd, self.err_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        shutil.rmtree(self.scratch, ignore_errors=True)


def read_usage(pid: int) -> tuple[float, float]:
    """(cpu seconds including reaped children, resident MB now) of one process, from one read
    of /proc/<pid>/stat; the watchdog keeps the peak over the run."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / CLK_TCK
        return cpu, int(fields[21]) * PAGE / MB
    except (OSError, IndexError, ValueError):
        return 0.0, 0.0


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def dir_size(path: str) -> int:
    total = 0
    stack = [path]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    elif entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_blocks * 512
        except OSError:
            continue
    return total


class Watchdog:
    """Polls a process tree: RSS against memory_mb, process count against max_processes,
    scratch size, and CPU share (duty-cycle throttling with SIGSTOP/SIGCONT).

    ``check`` is one poll; ``watch`` polls while code runs, ``IdleWatch`` between the runs of a
    session (background threads and processes obey the same limits).
    """

    WINDOW = 2.0  # seconds over which cpu_percent is averaged

    def __init__(self, runner: int, limits: ResourceLimits, scratch: str,
                 spare: tuple[int, ...] = ()) -> None:
        self.runner = runner
        self.limits = limits
        self.scratch = scratch
        self.spare = set(spare)
        self.peak_rss = 0
        self.tick = 0
        self.tree = [runner]
        self.cpu_share = limits.cpu_percent / 100.0
        self.throttle = self.cpu_share < (os.cpu_count() or 1)
        self._window: tuple[float, float] | None = None  # (start time, cpu used then)

    def _tree(self) -> list[int]:
        if self.runner <= 0:
            return []
        return [self.runner, *descendants(self.runner)]

    def check(self) -> tuple[tuple[str, Any, Any] | None, float]:
        """One poll: (violation or None, seconds to pause the tree for the CPU share)."""
        limits = self.limits
        self.tick += 1
        if self.tick % 4 == 1:
            self.tree = [p for p in self._tree() if p not in self.spare]
            if len(self.tree) > limits.max_processes:
                return ("max_processes", len(self.tree), limits.max_processes), 0.0
        rss = sum(rss_bytes(pid) for pid in self.tree)
        self.peak_rss = max(self.peak_rss, rss)
        if rss > limits.memory_mb * MB:
            return ("memory_mb", round(rss / MB, 1), limits.memory_mb), 0.0
        if self.tick % 20 == 0:
            used_bytes = dir_size(self.scratch)
            if used_bytes > limits.max_file_size_mb * MB * SCRATCH_FACTOR:
                return ("max_file_size_mb", f"{used_bytes // MB} MB in scratch",
                        f"{limits.max_file_size_mb} MB per file, "
                        f"{limits.max_file_size_mb * SCRATCH_FACTOR} MB in total"), 0.0
        if not self.throttle:
            return None, 0.0
        now = time.monotonic()
        used = sum(read_usage(pid)[0] for pid in self.tree)
        if self._window is None or now - self._window[0] > self.WINDOW:
            self._window = (now, used)
            return None, 0.0
        start, base = self._window
        excess = (used - base) - self.cpu_share * (now - start) - 0.05
        return None, (excess / self.cpu_share if excess > 0 else 0.0)

    async def watch(self) -> tuple[str, Any, Any]:
        interval = 0.005
        while True:
            await asyncio.sleep(interval)
            interval = min(interval * 2, 0.05)
            violation, pause = self.check()
            if violation is not None:
                return violation
            if pause:
                self.signal_tree(signal.SIGSTOP)
                try:
                    await asyncio.sleep(pause)
                finally:
                    self.signal_tree(signal.SIGCONT)

    def signal_tree(self, sig: int) -> None:
        for pid in self.tree:
            if pid > 0:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)


class IdleWatch:
    """Enforces a session's limits between runs, from a thread (independent of event loops).

    A cell may leave threads or processes running; they get the same CPU share and memory cap.
    Over a cap, the session is killed (there is no checkpoint between runs) and ``on_violation``
    is called with the violation.
    """

    INTERVAL = 0.25

    def __init__(self, holder: int, limits: ResourceLimits, scratch: str,
                 on_violation: Callable[[tuple[str, Any, Any]], Any]) -> None:
        self.watchdog = Watchdog(holder, limits, scratch)
        self.on_violation = on_violation
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="agenticraft-idle-watch",
                                        daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.INTERVAL):
            violation, pause = self.watchdog.check()
            if violation is not None:
                kill_tree(self.watchdog.runner)
                self.on_violation(violation)
                return
            if pause:
                self.watchdog.signal_tree(signal.SIGSTOP)
                self._stop.wait(pause)
                self.watchdog.signal_tree(signal.SIGCONT)

    def stop(self) -> None:
        """Stop watching (before the next run, which has its own watchdog)."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()


class Supervisor:
    """Runs code in workers and enforces the limits a worker cannot enforce on itself."""

    def __init__(self, disabled: frozenset[str], preload: tuple[str, ...] = ()) -> None:
        self.zygote = Zygote(disabled, preload)
        self._run_ids = 0
        self._start_lock = threading.Lock()

    @property
    def mechanisms(self) -> dict[str, Any]:
        return self.zygote.mechanisms

    def start(self) -> None:
        """Start the zygote (idempotent, thread-safe; call it from ``LAUNCHER``)."""
        with self._start_lock:
            if self.zygote.proc is None or self.zygote.proc.poll() is not None:
                self.zygote.start()

    async def astart(self) -> None:
        await asyncio.get_running_loop().run_in_executor(LAUNCHER, self.start)

    def close(self) -> None:
        self.zygote.close()

    async def spawn(self, profile: dict[str, Any], *, prefork: bool,
                    session: bool = False) -> WorkerHandle:
        reply, fds = self.zygote.spawn(profile, prefork, session)
        handle = WorkerHandle(reply["pid"], fds, reply["scratch"])
        try:
            ready = await asyncio.wait_for(handle.recv(), timeout=30)
        except (TimeoutError, protocol.ProtocolError) as exc:
            self.discard(handle)
            raise SandboxError(f"a sandbox worker did not start: {exc}") from None
        if not ready or ready.get("ev") != "ready":
            self.discard(handle)
            detail = (ready or {}).get("error", "it exited during confinement")
            raise SandboxError(f"a sandbox worker could not confine itself: {detail}")
        handle.ready = ready
        return handle

    def release(self, handle: WorkerHandle) -> None:
        """Politely end a worker that finished normally (its leftovers die with it)."""
        if handle.alive:
            with contextlib.suppress(OSError):
                handle.send({"op": "exit"})
        handle.close()

    def discard(self, handle: WorkerHandle) -> None:
        kill_tree(handle.pid)
        handle.close()

    async def run(self, handle: WorkerHandle, code: str, limits: ResourceLimits, *,
                  on_output: Callable[[Output], Any] | None = None, checkpoint: bool = False,
                  extra: dict[str, Any] | None = None,
                  interrupt: asyncio.Event | None = None, grace: float = 2.0,
                  on_event: Callable[[dict[str, Any]], Any] | None = None) -> RunOutcome:
        """One run. ``checkpoint``: the worker is a session holder that forks a runner.

        ``on_event`` receives the executor's own events (rich display data, input requests)
        as plain dicts while the code runs.
        """
        self._run_ids += 1
        run_id = self._run_ids
        loop = asyncio.get_running_loop()
        sink = OutputSink(limits.max_output_bytes, on_output)
        outcome = RunOutcome()
        started = time.monotonic()
        deadline = started + limits.timeout_seconds

        handle.watch_pipes(loop, sink)
        def event(data: dict[str, Any]) -> None:
            # Streams sent over the channel keep their order with rich output; both are capped.
            if data.get("type") == "stream" and data.get("name") in ("stdout", "stderr"):
                sink.feed(data["name"], str(data.get("text", "")).encode())
            elif data.get("type") in CONTROL_EVENTS and len(repr(data)) < 65536:
                if on_event is not None:  # small control messages are not output: never cut
                    on_event(data)
            elif sink.admit(len(json.dumps(data, default=repr))) and on_event is not None:
                on_event(data)

        watchdog: Watchdog | None = None
        tasks: list[asyncio.Task[Any]] = []
        runner = handle.pid
        try:
            handle.send({"op": "run", "run": run_id, "code": code, "checkpoint": checkpoint,
                         "limits": limits.as_dict(), **(extra or {})})
            if checkpoint:
                first = await self._frame(handle, run_id, deadline, event)
                if first is None or first.get("ev") != "started":
                    return self._ended_early(handle, first, outcome, checkpoint)
                runner = self._verify_runner(first, handle)
            watchdog = Watchdog(runner, limits, handle.scratch)
            done_task = asyncio.ensure_future(self._frame(handle, run_id, None, event))
            # Most runs finish in microseconds: the watchdog starts polling only after 5 ms.
            watch_task = asyncio.ensure_future(watchdog.watch())
            tasks = [done_task, watch_task]
            if interrupt is not None:
                tasks.append(asyncio.ensure_future(interrupt.wait()))
            finished, _ = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()),
                                             return_when=asyncio.FIRST_COMPLETED)
            if interrupt is not None and tasks[2] in finished and done_task not in finished:
                outcome.interrupted = True
                if runner > 0:  # 0 would be a process-group signal: never send that
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(runner, signal.SIGINT)
                finished, _ = await asyncio.wait([done_task], timeout=grace)
            if done_task in finished:
                frame = done_task.result()
                cpu, peak = read_usage(runner)
                outcome.usage = {"cpu_seconds": cpu, "memory_mb": max(peak, watchdog.peak_rss / MB)}
                if frame is not None and frame.get("ev") == "done":
                    outcome.frame = frame
                    failed_limit = "limit" in frame or "violation" in frame
                    if checkpoint and failed_limit:
                        outcome.rolled_back = await self._await_rollback(handle, run_id, runner)
                    elif checkpoint and runner > 0:
                        handle.pid = runner  # the runner is the live session now
                    elif failed_limit:
                        handle.alive = False
                else:
                    self._ended_early(handle, frame, outcome, checkpoint)
                return outcome
            # a limit, a timeout or an interrupt that did not stop in time: kill, maybe restore
            if watch_task in finished:
                outcome.violation = watch_task.result()
            elif not outcome.interrupted:
                outcome.violation = ("timeout_seconds", round(time.monotonic() - started, 2),
                                     limits.timeout_seconds)
            cpu, peak = read_usage(runner)
            outcome.usage = {"cpu_seconds": cpu, "memory_mb": max(peak, watchdog.peak_rss / MB)}
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            tasks = []
            if checkpoint:
                kill_tree(handle.pid, include_root=False)
                outcome.rolled_back = await self._await_rollback(handle, run_id, runner)
            else:
                kill_tree(handle.pid)
                handle.alive = False
            return outcome
        except protocol.ProtocolError as exc:
            outcome.crashed = f"the sandboxed code corrupted the control channel ({exc})"
            kill_tree(handle.pid)
            handle.alive = False
            return outcome
        finally:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            handle.drain(sink)
            handle.sink = None
            outcome.stdout = "".join(sink.parts["stdout"])
            outcome.stderr = "".join(sink.parts["stderr"])
            outcome.outputs = sink.outputs
            outcome.truncated = sink.truncated
            outcome.usage["output_bytes"] = sink.total
            outcome.wall = time.monotonic() - started

    async def _frame(self, handle: WorkerHandle, run_id: int, deadline: float | None,
                     on_event: Callable[[dict[str, Any]], Any] | None = None,
                     ) -> dict[str, Any] | None:
        """Next control frame of this run (stale frames of earlier runs are skipped; executor
        events go to ``on_event``)."""
        while True:
            if deadline is None:
                frame = await handle.recv()
            else:
                try:
                    frame = await asyncio.wait_for(handle.recv(),
                                                   max(0.001, deadline - time.monotonic()))
                except TimeoutError:
                    return {"ev": "timeout"}
            if frame is not None and frame.get("ev") == "event":
                if on_event is not None and isinstance(frame.get("data"), dict):
                    on_event(frame["data"])
                continue
            if frame is None or frame.get("run") == run_id:
                return frame

    def _verify_runner(self, frame: dict[str, Any], handle: WorkerHandle) -> int:
        """The runner pid comes from the untrusted side: accept only one of the session's."""
        pid = frame.get("pid")
        if not isinstance(pid, int):
            raise protocol.ProtocolError("started frame without a pid")
        if pid <= 0:
            raise protocol.ProtocolError("started frame names an invalid pid")
        # The runner may already have finished and been promoted (re-parented) by now, so check
        # the session it belongs to: the worker's own, which sandboxed code cannot leave
        # (setsid/setpgid are denied by seccomp).
        try:
            session = os.getsid(pid)
        except ProcessLookupError:
            return -1  # the runner already died (and was reaped): the checkpoint reports it
        if session != handle.session_id:
            raise protocol.ProtocolError("started frame names a process that is not ours")
        return pid

    def _ended_early(self, handle: WorkerHandle, frame: dict[str, Any] | None,
                     outcome: RunOutcome, checkpoint: bool) -> RunOutcome:
        if frame is not None and frame.get("ev") == "done":
            outcome.frame = frame  # the checkpoint could not even fork a runner
            return outcome
        if frame is not None and frame.get("ev") == "rolled_back":
            outcome.rolled_back = True
            outcome.crashed = "the sandboxed process " + describe_status(frame.get("status"))
            return outcome
        if frame is not None and frame.get("ev") == "timeout":
            outcome.violation = ("timeout_seconds", None, None)
        else:
            outcome.crashed = ("the sandboxed process ended abruptly (os._exit, a crash or a "
                               "signal)" if frame is None else f"unexpected frame {frame}")
        if checkpoint and handle.alive and frame is not None:
            kill_tree(handle.pid, include_root=False)
        else:
            kill_tree(handle.pid)
            handle.alive = False
        return outcome

    async def _await_rollback(self, handle: WorkerHandle, run_id: int, runner: int) -> bool:
        """After the runner is gone the checkpoint resumes and says so."""
        try:
            while True:
                frame = await asyncio.wait_for(handle.recv(), timeout=10)
                if frame is None:
                    break
                if frame.get("ev") == "rolled_back":
                    return True
        except (TimeoutError, protocol.ProtocolError):
            pass
        kill_tree(handle.pid)
        handle.alive = False
        return False


def describe_status(status: Any) -> str:
    if not isinstance(status, int):
        return "ended abruptly"
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with status {code} (os._exit or a crash) before finishing"
