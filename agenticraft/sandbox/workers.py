"""The host's handles on sandbox processes: the zygote that forks workers, each worker (its
channel, output pipes and scratch), and the sink that caps a run's output.
"""

from __future__ import annotations

import asyncio
import codecs
import concurrent.futures
import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from typing import Any

from agenticraft.jail.confine import pages, pidns
from agenticraft.jail.tree import children, descendants, kill_tree
from agenticraft.sandbox import leftovers, writeback
from agenticraft.sandbox.budget import RunBudget
from agenticraft.sandbox.profile import PACKAGE_ROOT
from agenticraft.sandbox.result import Output
from agenticraft.sandbox.unit import Unit
from agenticraft.sandbox.watchdog import parse_stat
from agenticraft.wire import protocol
from agenticraft.wire.environment import ZYGOTE_ENV_ALLOW, allowed_env
from agenticraft.wire.errors import SandboxError, SandboxUnavailable
from agenticraft.wire.limits import ResourceLimits

#: Zygotes are started from this one long-lived thread: the zygote's parent-death signal fires
#: when the *thread* that started it exits, so a short-lived executor thread would kill it.
LAUNCHER = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                 thread_name_prefix="agenticraft-launcher")
READ_CHUNK = 256 * 1024
MAX_PROFILE_REFS = 32  # (the zygote keeps up to 64: a cleared one asks for the whole again)
YIELD_EVERY = 16
CLOSED = "the sandbox was closed"
HOST_PID_WALKS = 3  # (a missed subtree has finished moving by the next walk)


class ZygoteProcess:
    """The host's handle on the zygote process (``jail.zygote.Zygote``), one per supervisor."""

    def __init__(self, disabled: frozenset[str], preload: tuple[str, ...] = (),
                 stack_room_mb: int = 0, share_pages: bool = False) -> None:
        self.disabled = disabled
        self.preload = preload
        self.stack_room_mb = stack_room_mb  # 0: the zygote keeps the RLIMIT_STACK it inherits
        self.share_pages = share_pages  # jail/confine/pages.py (AGENTICRAFT_SHARE_PAGES)
        leftovers.reap()  # what sandboxes of dead owners left (a SIGKILLed kernel, a crash)
        self.scratch_root = tempfile.mkdtemp(prefix=leftovers.scratch_prefix())
        os.chmod(self.scratch_root, 0o700)
        self._lock = threading.Lock()
        self.proc: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        self.closed = False  # by close(): only its sandbox's own start opens it again
        self.mechanisms: dict[str, Any] = {}
        self.profile_refs = False  # the zygote takes a profile it was sent by reference
        self._refs: dict[str, int] = {}  # profile (as sorted JSON) -> the running zygote's ref
        self._last_ref = 0

    def start(self) -> None:
        os.makedirs(self.scratch_root, 0o700, exist_ok=True)  # a previous zygote removed it
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = allowed_env(os.environ, ZYGOTE_ENV_ALLOW)
        env["PYTHONPATH"] = PACKAGE_ROOT  # -I ignores it; kept for clarity in ps output
        code = ("import sys; sys.path.insert(0, sys.argv.pop(1)); "
                "from agenticraft.jail.zygote import main; main()")
        isolated = ["-I"]
        if self.share_pages:  # one hash seed for all: -I (-E) would ignore it
            isolated = ["-s", "-P"]  # -I without -E; the environment is allow-listed anyway
            env["PYTHONHASHSEED"] = pages.HASH_SEED
        self.proc = subprocess.Popen(
            [sys.executable, *isolated, "-c", code, PACKAGE_ROOT, str(child.fileno()),
             ",".join(sorted(self.disabled)), ",".join(self.preload), self.scratch_root,
             str(self.stack_room_mb), "1" if self.share_pages else ""],
            pass_fds=[child.fileno()], env=env, cwd="/", stdin=subprocess.DEVNULL,
            start_new_session=True)
        child.close()
        self.sock = parent
        hello, _ = self._recv(timeout=30)
        if hello.get("ev") != "hello":
            raise SandboxUnavailable("process", [f"zygote failed to start: {hello}"])
        self._greeted(hello)

    def ensure_started(self, *, reopen: bool = False) -> None:
        """Start the zygote unless it runs (call it from ``LAUNCHER``). ``reopen``: its sandbox
        is started again, which opens a closed zygote; otherwise (a spawn, a background
        refill, a start queued before the close) a closed one stays closed. A close while it
        starts ends the new zygote too: a refill that began before its sandbox closed started
        one that nothing closed again (in the container sandbox, a container that lived as
        long as this process)."""
        if reopen:
            self.closed = False
        elif self.closed:
            raise SandboxError(CLOSED)
        if self.proc is None or self.proc.poll() is not None:
            try:
                self.start()
            except Exception:
                if not self.closed:
                    raise
            if self.closed:  # (a start that failed because of it says so, too)
                self.close()
                raise SandboxError(CLOSED)

    def _greeted(self, hello: dict[str, Any]) -> None:
        """What a (re)started zygote said about itself (it knows no profile reference yet)."""
        self.mechanisms = hello["mechanisms"]
        self.profile_refs = bool(hello.get("profile_refs"))
        self._refs = {}

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

    def spawn(self, profile: dict[str, Any], prefork: bool, session: bool = False,
              pool: bool = True, background: bool = False,
              key: str = "") -> tuple[dict[str, Any], list[int]]:
        """``pool=False``: fork anew even when a blank child waits (benchmarks compare).
        ``background``: no run waits for this worker (the supervisor fills its own pool).
        ``key``: the profile as sorted JSON, if the caller has it already."""
        request = {"op": "spawn", "prefork": prefork, "session": session, "pool": pool,
                   "background": background}
        with self._lock:
            if self.closed or self.proc is None or self.proc.poll() is not None:
                LAUNCHER.submit(self.ensure_started).result()
            assert self.sock is not None
            key = key or json.dumps(profile, sort_keys=True)
            reply, fds = self._spawn(request, profile, key)
            if reply.get("unknown_ref"):  # the zygote let it go (it keeps MAX_PROFILES)
                self._refs.clear()
                reply, fds = self._spawn(request, profile, key)
        if not reply.get("ok"):
            raise SandboxError(f"the zygote could not start a worker: {reply.get('error')}")
        return reply, fds

    def _spawn(self, request: dict[str, Any], profile: dict[str, Any],
               key: str) -> tuple[dict[str, Any], list[int]]:
        """Send a spawn request: the profile whole the first time, by reference afterwards
        (a zygote that says ``profile_refs``; the references are this zygote process's)."""
        assert self.sock is not None
        if not self.profile_refs:  # (a container image's older zygote)
            request = {**request, "profile": profile}
        else:
            ref = self._refs.get(key)
            if ref is None:
                if len(self._refs) >= MAX_PROFILE_REFS:
                    self._refs.clear()
                self._last_ref += 1
                ref = self._refs[key] = self._last_ref
                request = {**request, "profile": profile}
            request = {**request, "ref": ref}
        self.sock.send(json.dumps(request).encode())
        return self._recv(timeout=30)

    def refill(self) -> None:
        """A run of a ready worker ended: the zygote may now replace it (no reply). Never
        waits: while a spawn is under way the zygote refills after it anyway."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            if self.sock is not None:
                with contextlib.suppress(OSError):
                    self.sock.send(b'{"op": "refill"}')
        finally:
            self._lock.release()

    def close(self) -> None:
        """Stop the zygote for good (see ``ensure_started``)."""
        self.closed = True
        self._stop()

    def _stop(self) -> None:
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

    def host_pid(self, pid: int) -> int:
        """A pid the zygote reported, as this process sees it (the same here; a container's
        zygote reports pids of the container's pid namespace)."""
        return pid



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



def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class WorkerHandle:
    """A worker process as the supervisor holds it: pid, channel, output pipes, scratch."""

    def __init__(self, pid: int, fds: list[int], scratch: str) -> None:
        self.pid = pid          # the worker (for a session: the live state holder)
        self.session_id = pid   # the worker called setsid(): its descendants keep this id
        #: With a PID namespace (``jail.confine.pidns``): the zygote's child is the keeper
        #: outside it, ``init`` its process 1; killing the keeper ends the whole sandbox.
        self.keeper: int | None = None
        self.init: int | None = None
        #: A session's undo state: the checkpoint of its last kept run, stopped and held (see
        #: ``Supervisor.undo``), and that run's id (its rollback frame names it).
        self.undo: int | None = None
        self.undo_run: int | None = None
        self.undo_slot = False  # the session keeps an undo state (its profile reserved a process)
        #: The last kept run's runner forked the next run's runner ahead of time (it said so)
        self.next_prefork = False
        self.unit = Unit(pid)   # everything it starts (the supervisor attaches its cgroups)
        self.chan = socket.socket(fileno=fds[0])
        self.chan.setblocking(False)
        self.out_fd, self.err_fd = fds[1], fds[2]
        for fd in (self.out_fd, self.err_fd):
            os.set_blocking(fd, False)
        self.scratch = scratch
        self.frames = protocol.FrameBuffer()
        self._burst = 0
        self.alive = True
        self.ready: dict[str, Any] = {}
        self.sink: OutputSink | None = None
        self._pipe_loop: asyncio.AbstractEventLoop | None = None
        self._run_tail: tuple[Any, bytes] | None = None
        self._stat_fd: int | None = None
        #: Writable working directories, as overlays whose changes are copied back (writeback)
        self.overlays: list[writeback.Overlay] = []
        self._overlay_sock: int | None = fds[3] if len(fds) > 3 else None
        #: Resident MB when it became ready (the restricted sandbox compares runs against it).
        self.start_rss_mb = 0.0
        #: Taken from the zygote's ready pool: its release tells the zygote to refill the pool.
        self.preforked = False
        self.zygote_pid = -1  # the zygote that forked it (a pooled worker must be of the live one)
        self.pool_key = ""  # its profile's key, for a pre-forked one-shot worker
        self.profile: dict[str, Any] | None = None  # (the same) to take the next one
        #: Its unit's counters read while it waited in the pool (a one-shot run counts from them)
        self.before: dict[str, Any] | None = None

    async def recv(self) -> dict[str, Any] | None:
        """Next frame, or None at end of stream. Raises ProtocolError on garbage.

        Frames are decoded one at a time, and the event loop gets a turn every
        ``YIELD_EVERY`` frames and after every full read, so a flood of frames can never keep the
        loop (heartbeats, ``kernel_info``, interrupts) from running."""
        self._burst += 1
        if self._burst >= YIELD_EVERY:
            self._burst = 0
            await asyncio.sleep(0)
        while (frame := self.frames.pop()) is None:
            try:
                data = await self._read()
            except ConnectionResetError:  # the other end died with data unread
                return None
            if not data:
                return None
            self.frames.push(data)
            if len(data) == READ_CHUNK:  # more is waiting (a flood): let the loop run first
                self._burst = 0
                await asyncio.sleep(0)
        return frame

    async def recv_rollback(self, run_id: int, timeout: float) -> bool:
        """After a killed run: True once the checkpoint's ``rolled_back`` frame for ``run_id``
        has arrived. The runner may have died in the middle of a frame, so the stream is not
        read frame by frame here: it is read raw until it ends with that frame (the
        checkpoint's last word before it waits for the next run)."""
        loop = asyncio.get_running_loop()
        tail = self.frames.take()
        deadline = loop.time() + timeout
        while True:
            frame = protocol.last_frame(tail)
            if frame is not None and frame.get("ev") == "rolled_back" and frame.get(
                    "run") == run_id:
                return True
            data = await asyncio.wait_for(self._read(), max(0.001, deadline - loop.time()))
            if not data:
                return False
            tail = (tail + data)[-READ_CHUNK:]

    async def _read(self) -> bytes:
        """What the channel holds (b"" at its end), waiting until it holds something. Safe to
        cancel: only this coroutine takes bytes from the socket, after it has resumed. (asyncio's
        ``sock_recv`` takes them in a callback; a task cancelled between that callback and its
        next step dropped them: a run stopped for a limit lost its checkpoint's ``rolled_back``
        frame that way, and the session its state.)"""
        while True:
            try:
                return self.chan.recv(READ_CHUNK)
            except BlockingIOError:
                pass
            loop = asyncio.get_running_loop()
            readable = loop.create_future()
            fd = self.chan.fileno()
            loop.add_reader(fd, _resolve, readable)
            try:
                await readable
            finally:
                loop.remove_reader(fd)

    def budget(self, budget: RunBudget | None) -> None:
        """Weigh every frame read from now on against ``budget`` (None: only ``MAX_FRAME``)."""
        self.frames.admit = budget.admit if budget is not None else None

    def discard_stale(self) -> None:
        """Drop every frame that arrived since the last run (a thread left running may write
        to the channel between runs; nothing it sends then can count for the next run)."""
        self.frames.take()  # (its admission check, the run's budget, stays)
        while True:
            try:
                data = self.chan.recv(1 << 20)
            except OSError:  # nothing more waiting (BlockingIOError), or the worker is gone
                return
            if not data:
                return

    def send(self, message: dict[str, Any]) -> None:
        self._send_frame(protocol.encode(message))

    def _send_frame(self, data: bytes) -> None:
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

    def send_run(self, run_id: int, code: str, limits: ResourceLimits,
                 extra: dict[str, Any] | None) -> None:
        """Send a (non-checkpoint) run request; the part that depends only on the limits and
        ``extra`` is encoded once and reused while they stay the same."""
        key = (limits, json.dumps(extra, sort_keys=True) if extra else "")
        if self._run_tail is None or self._run_tail[0] != key:
            self._run_tail = (key, _run_tail(*key))
        body = (b'{"op":"run","run":%d,"code":' % run_id
                + json.dumps(code, separators=(",", ":")).encode() + b"," + self._run_tail[1])
        self._send_frame(protocol.HEADER.pack(len(body)) + body)

    def usage(self) -> tuple[float, float]:
        """The worker's (cpu seconds, resident MB), with its /proc stat file kept open."""
        fd = self._stat_fd
        if fd is None:
            try:
                fd = self._stat_fd = os.open(f"/proc/{self.pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return 0.0, 0.0
        try:
            return parse_stat(os.pread(fd, 1024, 0))
        except OSError:
            return 0.0, 0.0

    def watch_pipes(self, loop: asyncio.AbstractEventLoop, sink: OutputSink | None) -> None:
        """Route the output pipes to ``sink`` (readers stay registered across runs; None:
        output is dropped, as between runs)."""
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

    def adopt_pid_namespace(self, ready: dict[str, Any]) -> None:
        """The worker runs in a PID namespace when its ready frame names the namespace's init
        (sent before any sandboxed code ran). The init must be the keeper's only child and the
        worker the init's: then the worker's host pid is known."""
        info = (ready.get("applied") or {}).get("pid_namespace")
        if not isinstance(info, dict):
            return
        init = info.get("init_pid")
        if not isinstance(init, int) or children(self.pid) != [init]:
            raise SandboxError(f"a sandbox worker named an init that is not its own: {init!r}")
        workers = children(init)
        if len(workers) != 1:
            raise SandboxError("a sandbox's PID namespace does not hold exactly one worker")
        self.keeper, self.init, self.pid = self.pid, init, workers[0]

    def adopt_overlays(self, profile: dict[str, Any]) -> None:
        """Take the overlays a writable working directory became (sent before the ready frame)
        and keep those of the directories this worker's profile names (the host path is the
        supervisor's, never one the sandbox chose)."""
        if self._overlay_sock is None:
            return
        overlays, self._overlay_sock = writeback.receive(self._overlay_sock), None
        writable = {p for p in profile.get("write_paths", ()) if p == profile.get("workdir")}
        for overlay in overlays:
            if overlay.host in writable:
                overlay.protected([*profile.get("deny_paths", ()),
                                   *profile.get("read_only_paths", ())])
                self.overlays.append(overlay)
            else:
                overlay.close()

    def sandbox_processes(self) -> tuple[int, ...]:
        """The processes a rollback must spare: the checkpoint, with a PID namespace its keeper
        and init (killing either ends the whole namespace), and a kept undo state."""
        return tuple(p for p in (self.pid, self.keeper, self.init, self.undo) if p is not None)

    @property
    def reserved(self) -> int:
        """How many of the sandbox's own processes ``max_processes`` does not count: the
        checkpoint, the keeper and init, and the slot of an undo state (see ``confine``)."""
        return 1 + (2 if self.keeper is not None else 0) + (1 if self.undo_slot else 0)

    def host_pid(self, inner: int) -> int | None:
        """The host pid of the sandbox process the worker calls ``inner`` (any process under the
        init: a runner, a child of a checkpoint's thread, one re-parented to the init or still on
        its way there), or ``inner`` itself without a PID namespace. None if no such process of
        this sandbox exists (any more).

        The tree is walked again when a walk finds nothing: a walk that read the init's
        children just before a runner's subtree was re-parented to it (its checkpoint ended)
        and the checkpoint's just after saw none of that subtree."""
        if self.init is None:
            return inner
        for _ in range(HOST_PID_WALKS):
            found = pidns.host_pid(inner, descendants(self.init))
            if found is not None:
                return found
        return None

    def close(self) -> None:
        """End the sandbox now and let go of it.

        With a PID namespace one SIGKILL to the keeper ends everything: the init dies with it
        (its parent-death signal) and every process of the namespace with the init. The walk
        over the tree that also kills them one by one (``finish``) then only confirms it, so it
        runs after the caller has its result (on the event loop's next turn), as does the
        scratch directory's removal: the zygote removes it once it has reaped the keeper (by
        then no mount of the sandbox holds it). Without a PID namespace both happen here."""
        self.alive = False
        if self.keeper is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.keeper, signal.SIGKILL)
            if self.undo is not None:  # (inside the namespace: it died with it too)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(self.undo, signal.SIGKILL)
            try:
                asyncio.get_running_loop().call_soon(self.finish)
            except RuntimeError:  # no loop here: at once
                self.finish()
        else:
            self.finish()
        # Its cgroups are not removed here (5 rmdirs, ~3 ms on the caller's path): the zygote
        # removes a dead worker's cgroups once they are empty, and all of them when it ends.
        self.unwatch_pipes()
        if self._stat_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._stat_fd)
            self._stat_fd = None
        self.unit.close_files()
        with contextlib.suppress(OSError):
            self.chan.close()
        for fd in (self.out_fd, self.err_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        for overlay in self.overlays:  # after the kill: the sandbox's writes die with it
            overlay.close()
        self.overlays = []
        if self._overlay_sock is not None:
            with contextlib.suppress(OSError):
                os.close(self._overlay_sock)
            self._overlay_sock = None

    def finish(self) -> None:
        """Kill the whole tree (freeze, then kill) and a kept undo state; without a PID
        namespace also remove the scratch directory (with one, the zygote does)."""
        if self.keeper is not None:
            kill_tree(self.keeper)
        if self.undo is not None:  # a stopped undo state never outlives its session
            kill_tree(self.undo)
            self.undo = None
        if self.keeper is None:
            shutil.rmtree(self.scratch, ignore_errors=True)


@functools.lru_cache(maxsize=64)
def _run_tail(limits: ResourceLimits, extra: str) -> bytes:
    """The constant part of a run request (shared by every worker: one-shot workers run once)."""
    tail = json.dumps({"checkpoint": False, "limits": limits.as_dict(),
                       **(json.loads(extra) if extra else {})}, separators=(",", ":"))
    return tail[1:].encode()
