"""The trusted side of the process sandbox: runs code in workers and enforces what a worker
cannot be trusted to enforce on itself (wall clock, output volume, and, through the
``Watchdog``, RSS, process count and CPU share), killing the whole process tree on a violation.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from agenticraft.jail.confine.apply import unit_layout
from agenticraft.jail.tree import children, kill_tree
from agenticraft.sandbox import writeback
from agenticraft.sandbox.budget import ResultTooLarge, RunBudget
from agenticraft.sandbox.result import Output
from agenticraft.sandbox.unit import Unit
from agenticraft.sandbox.watchdog import MB, Watchdog, read_usage
from agenticraft.sandbox.workers import LAUNCHER, OutputSink, WorkerHandle, ZygoteProcess
from agenticraft.wire import protocol
from agenticraft.wire.errors import SandboxError
from agenticraft.wire.limits import ResourceLimits

#: Executor events that steer the run rather than show output: exempt from max_output_bytes
#: (but counted: ``RunBudget.control``) when they are small.
CONTROL_EVENTS = frozenset({"input_request", "cell_started"})
MAX_CONTROL_EVENT = 65536


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
    #: What happened to the run's changes to its writable working directory (``writeback``)
    writeback: dict[str, Any] = dataclasses.field(default_factory=dict)



#: How long a run in the live process waits for a runner being forked ahead (``_settle_prefork``)
PREFORK_SETTLE = 5.0


class Supervisor:
    """Runs code in workers and enforces the limits a worker cannot enforce on itself."""

    def __init__(self, disabled: frozenset[str], preload: tuple[str, ...] = (), *,
                 zygote: ZygoteProcess | None = None, stack_room_mb: int = 0,
                 share_pages: bool = False) -> None:
        # ``zygote``: another way to run the same zygote (the container sandbox's, in a container)
        self.zygote = zygote if zygote is not None else ZygoteProcess(
            disabled, preload, stack_room_mb, share_pages=share_pages)
        self._start_lock = threading.Lock()
        self._layout: tuple[dict[str, Any], Any] | None = None
        #: One confined worker per pre-forked profile, already taken from the zygote, adopted
        #: and checked (see :meth:`spawn`): a one-shot run then makes no round trip to it.
        self._pool: dict[str, WorkerHandle] = {}
        self._refilling: set[str] = set()
        self._refills: set[asyncio.Task[None]] = set()  # (references keep them alive)

    @property
    def mechanisms(self) -> dict[str, Any]:
        return self.zygote.mechanisms

    def start(self, reopen: bool = False) -> None:
        """Start the zygote (idempotent, thread-safe; call it from ``LAUNCHER``). A closed
        one stays closed (a start queued before the close) unless ``reopen``."""
        with self._start_lock:
            self.zygote.ensure_started(reopen=reopen)

    async def astart(self, require: Callable[[dict[str, Any]], None] | None = None) -> None:
        """Start the zygote, also after a ``close`` (its sandbox is started again);
        ``require(mechanisms)`` may refuse this host (the policy's ``[sandbox] require``), and
        then the zygote is stopped again."""
        await asyncio.get_running_loop().run_in_executor(LAUNCHER, self.start, True)
        if require is not None:
            try:
                require(self.mechanisms)
            except BaseException:
                self.close()
                raise

    def close(self) -> None:
        self._drop_pool()
        self.zygote.close()

    def _drop_pool(self) -> None:
        pool, self._pool = self._pool, {}
        for handle in pool.values():
            handle.close()

    async def spawn(self, profile: dict[str, Any], *, prefork: bool,
                    session: bool = False, pool: bool = True) -> WorkerHandle:
        """A confined worker for ``profile``, ready to run. ``prefork``: a one-shot run of a
        profile likely to come again (the zygote keeps workers confined ahead of time for it,
        and this supervisor one more, so that the run pays no round trip to the zygote).
        ``pool=False``: fork anew even when a blank child waits (benchmarks compare)."""
        key = ""
        if prefork and not session:
            key = json.dumps(profile, sort_keys=True)
            handle = self._pool.pop(key, None)
            if handle is not None:
                if self._usable(handle):
                    return handle
                handle.close()
        handle = await self._spawn(profile, prefork, session, pool, key=key)
        if key:
            handle.pool_key = key
            if key not in self._pool:
                self._drop_pool()  # one profile is kept ready: the latest one
        return handle

    def _usable(self, handle: WorkerHandle) -> bool:
        """A pooled worker is used only if its zygote still runs and it is still alive."""
        proc = self.zygote.proc
        return (handle.alive and proc is not None and proc.poll() is None
                and handle.zygote_pid == self.zygote.pid and _alive(handle.pid))

    def _after_preforked(self, handle: WorkerHandle) -> None:
        """A pre-forked worker's run is over: the zygote may refill its pool now, and this
        supervisor takes the next worker for the profile from it, in the background (the
        zygote's reply is awaited in a thread, never on the loop)."""
        key, profile = handle.pool_key, handle.profile
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.zygote.refill()
            return
        if not key or profile is None or key in self._pool or key in self._refilling:
            loop.call_soon(self.zygote.refill)
            return
        self._refilling.add(key)

        async def refill() -> None:
            self.zygote.refill()
            try:
                fresh = await self._spawn(profile, True, False, True, threaded=True, key=key)
            except (SandboxError, OSError):
                return
            finally:
                self._refilling.discard(key)
            fresh.pool_key = key
            if key in self._pool or self.zygote.proc is None:
                self.discard(fresh)
                return
            # What a one-shot run does first, done now: its pipes watched, its files open, its
            # unit's CPU time and OOM count before the run (an idle worker adds nothing).
            fresh.unit.keep_files_open()
            fresh.watch_pipes(loop, None)
            fresh.usage()
            fresh.unit.memory_peak_mb()
            fresh.before = {"oom": fresh.unit.oom_kills(), "cpu": fresh.unit.cpu_seconds()}
            self._pool[key] = fresh
        task = loop.create_task(refill())
        self._refills.add(task)
        task.add_done_callback(self._refills.discard)

    async def _spawn(self, profile: dict[str, Any], prefork: bool, session: bool, pool: bool,
                     *, threaded: bool = False, key: str = "") -> WorkerHandle:
        """``key``: the profile as sorted JSON, where the caller made it already."""
        if threaded:
            reply, fds = await asyncio.get_running_loop().run_in_executor(
                None, self.zygote.spawn, profile, prefork, session, pool, True, key)
        else:
            reply, fds = self.zygote.spawn(profile, prefork, session, pool, key=key)
        handle = WorkerHandle(self.zygote.host_pid(reply["pid"]), fds, reply["scratch"])
        handle.unit = Unit.for_worker(self.mechanisms, self.zygote.pid, reply["pid"],
                                      layout=self._unit_layout())
        handle.undo_slot = bool(profile.get("undo_state"))
        handle.preforked = prefork
        handle.zygote_pid = self.zygote.pid
        handle.profile = profile if prefork and not session else None
        if session:  # read before and after every run: one pread each, not a path walk
            handle.unit.keep_files_open()
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
        try:
            handle.adopt_pid_namespace(ready)
        except SandboxError:
            self.discard(handle)
            raise
        handle.adopt_overlays(profile)
        if "cgroups" in (ready.get("applied") or {}):
            # The worker wrote exactly these limits on its unit before it said ready (no
            # sandboxed code has run yet): a run with the same limits need not write them again.
            handle.unit.assume_limits(profile["memory_mb"], profile["cpu_percent"],
                                      profile["max_processes"], handle.reserved)
        return handle

    def _unit_layout(self) -> Any:
        """The cgroup layout of this zygote's workers, computed once per zygote start."""
        mechanisms = self.mechanisms
        if self._layout is None or self._layout[0] is not mechanisms:
            self._layout = (mechanisms, unit_layout(mechanisms))
        return self._layout[1]

    def release(self, handle: WorkerHandle) -> None:
        """End a worker whose run is over (its leftovers die with it): politely without a PID
        namespace, by killing the namespace with one: nothing of the run outlives this call
        (see ``WorkerHandle.close``). A pre-forked worker's zygote may refill its pool now."""
        if handle.alive and handle.keeper is None:
            with contextlib.suppress(OSError):
                handle.send({"op": "exit"})
        handle.close()
        if handle.preforked:
            self._after_preforked(handle)

    @staticmethod
    def _kill_all(handle: WorkerHandle) -> None:
        """End the worker's tree and its whole unit (processes that left the tree: re-parented
        to the PID namespace's init, or in a session of their own): it is dead to us."""
        kill_tree(handle.pid)
        handle.unit.kill()
        handle.alive = False

    def discard(self, handle: WorkerHandle) -> None:
        """Kill everything the worker ever started (its whole unit), then let go of it."""
        kill_tree(handle.pid)
        handle.unit.kill()
        handle.close()
        if handle.preforked:
            self._after_preforked(handle)

    async def run(self, handle: WorkerHandle, code: str, limits: ResourceLimits, *,
                  on_output: Callable[[Output], Any] | None = None, checkpoint: bool = False,
                  extra: dict[str, Any] | None = None,
                  interrupt: asyncio.Event | None = None, grace: float = 2.0,
                  on_event: Callable[[dict[str, Any]], Any] | None = None,
                  keep_undo: bool = False) -> RunOutcome:
        """One run. ``checkpoint``: the worker is a session holder that forks a runner.

        ``on_event`` receives the executor's own events (rich display data, input requests)
        as plain dicts while the code runs. ``keep_undo`` (with ``checkpoint``): if the run is
        accepted, its checkpoint is kept as the session's undo state (see :meth:`undo`).
        """
        run_id = self._next_run_id()
        loop = asyncio.get_running_loop()
        sink = OutputSink(limits.max_output_bytes, on_output)
        outcome = RunOutcome()
        started = time.monotonic()
        deadline = started + limits.timeout_seconds
        # No run starts beside the undo state the last kept run replaced (killed at its
        # promotion, and reaped by now unless runs come back to back): see ``_promote``.
        await handle.unit.settle()
        if handle.next_prefork and not checkpoint:
            await self._settle_prefork(handle)
        before = self._prepare_run(handle, limits, checkpoint)

        handle.watch_pipes(loop, sink)
        budget = RunBudget(limits, on_discard=sink.admit)
        handle.budget(budget)

        def event(data: dict[str, Any]) -> None:
            # Streams sent over the channel keep their order with rich output; both are capped
            # (a frame's size is known from its header: nothing is encoded again to weigh it).
            if data.get("type") == "stream" and data.get("name") in ("stdout", "stderr"):
                sink.feed(data["name"], str(data.get("text", "")).encode())
            elif data.get("type") in CONTROL_EVENTS and budget.last_size < MAX_CONTROL_EVENT:
                budget.control()
                if on_event is not None:  # small control messages are not output: never cut
                    on_event(data)
            elif sink.admit(budget.last_size) and on_event is not None:
                on_event(data)

        watchdog: Watchdog | None = None
        tasks: list[asyncio.Task[Any]] = []
        runner = handle.pid
        try:
            if checkpoint and handle.overlays:
                # Renewed before the cell; the worker stands aside between cells meanwhile.
                renewed = self._renew(handle)
                extra = {**(extra or {}), "remounted": renewed,
                         "leave": any(o.keeper is not None for o in handle.overlays)}
            # A session's runner forks the next run's runner as soon as this run is kept
            # (``prefork``; it says so in its reply): that run then starts without a fork.
            handle.send({"op": "run", "run": run_id, "code": code, "checkpoint": checkpoint,
                         "limits": limits.as_dict(), **({"prefork": True} if checkpoint else {}),
                         **(extra or {})})
            if checkpoint:
                first = await self._frame(handle, run_id, deadline, event)
                if first is None or first.get("ev") != "started":
                    return self._ended_early(handle, first, outcome, checkpoint)
                runner = self._find_runner(handle, before)
                handle.unit.prefer_oom(runner, True)  # the OOM killer spares the checkpoint
            watchdog = Watchdog(runner, limits, handle.scratch,
                                unit=handle.unit if checkpoint else None,
                                spare=handle.sandbox_processes() if checkpoint else (),
                                priority=handle.unit, begun=started)
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
                outcome.usage = self._run_usage(handle, before, runner, watchdog)
                if frame is not None and frame.get("ev") == "done":
                    outcome.frame = frame
                    failed_limit = "limit" in frame or "violation" in frame
                    if checkpoint and failed_limit:  # the runner exits; the checkpoint resumes
                        outcome.rolled_back = await self._await_rollback(handle, run_id, runner)
                    elif checkpoint:
                        # A runner that finished fast may not have been seen at "started".
                        runner = runner if runner > 0 else self._find_runner(handle, before)
                        if runner <= 0:
                            raise protocol.ProtocolError("a run finished that no runner started")
                        self._promote(handle, runner, run_id if keep_undo else None)
                        handle.next_prefork = bool(frame.get("prefork"))
                    elif failed_limit:
                        handle.alive = False
                else:
                    self._ended_early(handle, frame, outcome, checkpoint)
                self._account_oom(handle, before, outcome, limits)
                return outcome
            # a limit, a timeout or an interrupt that did not stop in time: kill, maybe restore
            if watch_task in finished:
                outcome.violation = watch_task.result()
            elif not outcome.interrupted:
                outcome.violation = ("timeout_seconds", round(time.monotonic() - started, 2),
                                     limits.timeout_seconds)
            await self._stop_run(handle, run_id, runner, checkpoint, outcome, tasks, watchdog,
                                 before)
            tasks = []
            return outcome
        except ResultTooLarge as exc:  # the run went over max_output_bytes with its result
            outcome.violation = ("max_output_bytes", exc.size, exc.allowed)
            await self._stop_run(handle, run_id, runner, checkpoint, outcome, tasks, watchdog,
                                 before)
            tasks = []
            return outcome
        except protocol.ProtocolError as exc:
            outcome.crashed = f"the sandboxed code corrupted the control channel ({exc})"
            self._kill_all(handle)
            return outcome
        except Exception:  # a failure on this side: the run must not live on unsupervised
            self._kill_all(handle)
            raise
        finally:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            handle.budget(None)
            self._collect_output(handle, sink, outcome, started)
            if handle.overlays:
                self._write_back(handle, outcome)

    async def run_lean(self, handle: WorkerHandle, code: str, limits: ResourceLimits, *,
                       on_output: Callable[[Output], Any] | None = None,
                       extra: dict[str, Any] | None = None, one_shot: bool = False,
                       ) -> RunOutcome:
        """One run in a warm worker that is not a session and cannot be interrupted (the
        restricted sandbox's path): the same limits and the same outcome as :meth:`run`, with
        fewer moving parts on the caller's path.

        No tasks are created: the caller's own task waits for the worker's frame, and one
        timer callback on the loop serves the deadline and the watchdog (its first poll after
        5 ms, then backing off to 50 ms, as in :meth:`run`; the watchdog object is only made
        then). A violation kills the worker, which ends the wait (its channel closes). Most
        runs finish before the timer fires: a run costs one send (of a frame whose constant
        part is encoded once per limits), one receive, one timer handle and one ``pread`` of
        the worker's ``/proc/<pid>/stat`` for its usage.

        ``one_shot``: the worker's first and only run (the process sandbox's one-shot path):
        its usage and an OOM kill inside its unit are then the unit's, as in :meth:`run` (the
        unit is new, so its peak memory and OOM count are this run's; its CPU time is counted
        from the start of the run), and the unit's limits are this run's.
        """
        run_id = self._next_run_id()
        loop = asyncio.get_running_loop()
        sink = OutputSink(limits.max_output_bytes, on_output)
        outcome = RunOutcome()
        started = time.monotonic()
        runner = handle.pid
        end = started + max(0.0, limits.timeout_seconds)
        # [the one timer handle, the watchdog (made at the first poll), stopped tree?]
        state: list[Any] = [None, None, False]

        def stop(violation: tuple[str, Any, Any]) -> None:
            if outcome.violation is None:
                outcome.violation = violation
            if one_shot:  # its whole unit: a process that left the tree may hold the channel
                self._kill_all(handle)
            else:
                kill_tree(runner)

        def tick(interval: float) -> None:
            # One timer serves the deadline and the watchdog's polls (5 ms, then up to 50 ms).
            state[0] = None
            now = time.monotonic()
            if state[2]:  # resume after a CPU-share pause
                state[2] = False
                state[1].signal_tree(signal.SIGCONT)
            if now >= end:
                stop(("timeout_seconds", round(now - started, 2), limits.timeout_seconds))
                return
            if state[1] is None:
                state[1] = Watchdog(runner, limits, handle.scratch, priority=handle.unit,
                                    begun=started)
            violation, pause = state[1].check()
            if violation is not None:
                stop(violation)
                return
            if pause:
                state[1].signal_tree(signal.SIGSTOP)
                state[2] = True
                state[0] = loop.call_at(min(now + pause, end), tick, interval)
                return
            interval = min(interval * 2, 0.05)
            state[0] = loop.call_at(min(now + interval, end), tick, interval)

        handle.watch_pipes(loop, sink)
        handle.budget(RunBudget(limits, on_discard=sink.admit))
        before: dict[str, Any] = {"oom": 0, "cpu": None}
        try:
            handle.discard_stale()  # nothing sent between runs counts for this one
            handle.unit.set_interactive(True)  # (a warm worker's last run may have yielded)
            if one_shot:  # (no write when the worker already set these limits)
                handle.unit.set_limits(limits.memory_mb, limits.cpu_percent,
                                       limits.max_processes, handle.reserved)
                before = handle.before or {"oom": 0, "cpu": handle.unit.cpu_seconds()}
            handle.send_run(run_id, code, limits, extra)
            state[0] = loop.call_at(min(started + 0.005, end), tick, 0.005)
            frame = await self._frame(handle, run_id, None, None)
            cpu, peak = handle.usage()
            watched = state[1].peak_rss / MB if state[1] is not None else 0.0
            outcome.usage = {"cpu_seconds": cpu, "memory_mb": max(peak, watched)}
            if one_shot:
                outcome.usage = {"cpu_seconds": self._cpu(handle, before, cpu),
                                 "memory_mb": self._peak_mb(handle, peak, state[1])}
            if frame is not None and frame.get("ev") == "done":
                outcome.frame = frame
                if outcome.violation is not None:  # it finished as it was being killed
                    outcome.violation = None
                    handle.alive = False
                elif "limit" in frame or "violation" in frame:
                    handle.alive = False
                if one_shot:  # a process of the run the kernel's OOM killer took
                    self._account_oom(handle, before, outcome, limits)
                    handle.alive = handle.alive and outcome.violation is None
                return outcome
            if outcome.violation is not None:  # killed by the watchdog or the deadline
                handle.alive = False
                return outcome
            self._ended_early(handle, frame, outcome, False)
            self._account_oom(handle, before, outcome, limits)
            return outcome
        except ResultTooLarge as exc:
            outcome.violation = ("max_output_bytes", exc.size, exc.allowed)
            self._kill_all(handle)
            return outcome
        except protocol.ProtocolError as exc:
            outcome.crashed = f"the sandboxed code corrupted the control channel ({exc})"
            self._kill_all(handle)
            return outcome
        except Exception:
            self._kill_all(handle)
            raise
        finally:
            handle.budget(None)
            if state[0] is not None:
                state[0].cancel()
            if state[2]:
                state[1].signal_tree(signal.SIGCONT)  # never leave a stopped tree behind
            self._collect_output(handle, sink, outcome, started)
            if handle.overlays:
                self._write_back(handle, outcome)

    @staticmethod
    def _collect_output(handle: WorkerHandle, sink: OutputSink, outcome: RunOutcome,
                        started: float) -> None:
        """At a run's end: what is left in the pipes, then the run's output and wall time."""
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
                # Only this run's events: one queued by an earlier run (or sent between runs)
                # never reaches this run's output.
                if (on_event is not None and frame.get("run") == run_id
                        and isinstance(frame.get("data"), dict)):
                    on_event(frame["data"])
                continue
            if frame is None or frame.get("run") == run_id:
                return frame

    async def _stop_run(self, handle: WorkerHandle, run_id: int, runner: int, checkpoint: bool,
                        outcome: RunOutcome, tasks: list[asyncio.Task[Any]],
                        watchdog: Watchdog | None, before: dict[str, Any]) -> None:
        """Kill a run that went over a limit; a session's checkpoint restores its state."""
        outcome.usage = self._run_usage(handle, before, runner, watchdog)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if checkpoint:
            self._kill_run(handle)
            outcome.rolled_back = await self._await_rollback(handle, run_id, runner)
        else:
            self._kill_all(handle)

    # -- the supervisor decides: run ids, runner, promotion, what is killed --------------------
    @staticmethod
    def _write_back(handle: WorkerHandle, outcome: RunOutcome) -> None:
        """The run's changes to its writable working directory: copied to the host when it
        ended normally, undone in the session's view when it was rolled back, left to die
        with the sandbox otherwise (see ``writeback``)."""
        frame = outcome.frame or {}
        kept = (handle.alive and frame.get("ev") == "done" and "limit" not in frame
                and "violation" not in frame and outcome.violation is None
                and outcome.crashed is None and not outcome.rolled_back)
        for overlay in handle.overlays:
            if overlay.renew_error:
                outcome.stderr += (f"[agenticraft] the working directory's overlay could not be "
                                   f"renewed ({overlay.renew_error}): files the host replaces "
                                   "may show their old state until the session restarts\n")
                overlay.renew_error = ""
        if not (kept or outcome.rolled_back):
            return
        # A rolled-back cell's changes: dropped with its overlay where the keeper renews it.
        reports = [o.sync() if kept else writeback.Report() if o.renew() else o.revert()
                   for o in handle.overlays]
        outcome.writeback = {"copied_back" if kept else "reverted": [r.as_dict() for r in reports]}
        notes = [item for r in reports for item in (*r.skipped, *r.errors)]
        if kept and notes:  # said where the user looks: the run's stderr
            shown = ", ".join(notes[:5]) + (f" and {len(notes) - 5} more" if len(notes) > 5 else "")
            outcome.stderr += f"[agenticraft] not copied to the host working directory: {shown}\n"

    @staticmethod
    def _renew(handle: WorkerHandle) -> bool:
        """Before a session cell: a fresh overlay for each writable working directory, so the
        cell sees the host directory as it is now (overlayfs caches lookups of its lower
        layer). The last cell's changes are on the host already. True if any was renewed (the
        worker then enters its working directory anew)."""
        return any([overlay.renew() for overlay in handle.overlays])

    @staticmethod
    def _next_run_id() -> int:
        """Run ids are random: code left in a session cannot guess the next one's frames."""
        return secrets.randbits(53)

    @staticmethod
    async def _settle_prefork(handle: WorkerHandle, timeout: float = PREFORK_SETTLE) -> None:
        """Before a run in the live process itself while the last kept run's runner said it
        forks the next runner: wait until that fork has happened (or failed), which the worker
        says in a ``forked`` frame right after it. Whichever process then reads the channel runs
        the request; ``_prepare_run`` must know which, and a runner not forked yet is not among
        the live process's children (the session was then lost at its next cell). The frame
        only ends the wait early: who runs is still decided from /proc."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                frame = await asyncio.wait_for(handle.recv(),
                                               max(0.001, deadline - time.monotonic()))
            except TimeoutError:
                return
            if frame is None or frame.get("ev") == "forked":
                return

    @staticmethod
    def _prepare_run(handle: WorkerHandle, limits: ResourceLimits, checkpoint: bool,
                     ) -> dict[str, Any]:
        """Before a run: discard what arrived since the last one (nothing sent between runs
        counts), apply its limits to the unit, and note what the runner will be told from."""
        handle.discard_stale()
        handle.unit.set_limits(limits.memory_mb, limits.cpu_percent, limits.max_processes,
                               handle.reserved)
        handle.unit.set_interactive(True)  # a new cell starts with the CPU of any program
        handle.unit.reset_peak()
        prefork, handle.next_prefork = handle.next_prefork, False
        if prefork and not checkpoint:
            # A run in the live process itself (a debugger's request) while the runner forked
            # ahead for the next run waits: that runner reads the channel, so it becomes the
            # live process now (its checkpoint holds the same state and ends, as at a promotion).
            kids = children(handle.pid)
            if kids:
                Supervisor._promote(handle, max(kids, key=_birth))
            prefork = False
        # (with a runner forked ahead the checkpoint's only child is the runner: no list of
        # its children before the run is needed to tell the runner apart, see _find_runner)
        return {"children": set(children(handle.pid)) if checkpoint and not prefork else set(),
                "oom": handle.unit.oom_kills(), "cpu": handle.unit.cpu_seconds(),
                "prefork": checkpoint and prefork}

    @staticmethod
    def _find_runner(handle: WorkerHandle, before: dict[str, Any]) -> int:
        """The runner is the checkpoint's first child born for this run, as /proc shows it (a
        pid the sandboxed side names is never used); -1 if it already died.

        A runner forked ahead of time (the last kept run said ``prefork``) was born before
        this run: it is the checkpoint's youngest child (the checkpoint adopted no orphan from
        that fork on and had no other thread to fork; if that runner died before the run, the
        checkpoint reaped it and forked the run's runner, younger still)."""
        kids = children(handle.pid)
        if before.get("prefork"):
            return (kids[0] if len(kids) == 1 else max(kids, key=_birth)) if kids else -1
        born = [pid for pid in kids if pid not in before["children"]]
        return min(born, key=_start_time) if born else -1

    @staticmethod
    def _promote(handle: WorkerHandle, runner: int, keep_run: int | None = None) -> None:
        """The run is accepted: its checkpoint (and any thread in it) ends; the runner is the
        live session now. Only the supervisor does this.

        ``keep_run`` (the run's id): the checkpoint is kept instead, stopped, as the session's
        undo state, and the one kept before it ends. A stopped checkpoint still waits for its
        runner, so it resumes only when :meth:`undo` lets it run after that runner's end.

        The older state, or the checkpoint that is not kept, is killed here but not waited for
        (its exit takes ~1.5 ms, up to ~70 ms on a loaded machine): the next run waits for it
        (``Unit.settle``), so no run starts while it still holds a pid or memory of the unit
        (a session near its max_processes could not fork its runner meanwhile). For the older
        state that is also faster back to back than starting beside its exit
        (bench_kernel_parts.py); for a checkpoint not kept it costs a session run back to back
        ~0.3 ms (bench_latency.py), and nothing when runs are paced.
        """
        if keep_run is not None:
            older = handle.undo
            handle.unit.hold(handle.pid)  # its threads stop with it
            handle.undo, handle.undo_run = handle.pid, keep_run
            if older is not None:  # killed now, waited for before the next run (``settle``)
                handle.unit.release(older, resume=False)
                handle.unit.end(older)
        elif handle.undo is not None and _parent(handle.pid) == handle.undo:
            # the kept state's child: a zombie until that stopped state resumes or ends (it
            # reaps nothing meanwhile), so the next run cannot wait for it
            with contextlib.suppress(ProcessLookupError):
                os.kill(handle.pid, signal.SIGKILL)
        else:  # killed now, waited for before the next run, as the older state above
            handle.unit.end(handle.pid)
        handle.unit.prefer_oom(runner, False)
        handle.pid = runner

    async def undo(self, handle: WorkerHandle) -> bool:
        """Back to the session's undo state: every process of the unit but the kept checkpoint
        (and a PID namespace's keeper and init) is killed, and the checkpoint, let run again,
        finds its runner gone and resumes exactly as after a rollback. False when there is no
        undo state or it is gone (killed with the unit, or by the OOM killer); the session is
        then as it was. One state is kept: after an undo there is none until the next kept
        run. Raises SandboxError when the kept state does not resume (the session is lost)."""
        kept, run_id = handle.undo, handle.undo_run
        handle.undo = handle.undo_run = None
        if kept is None:
            return False
        if not _alive(kept):
            handle.unit.release(kept, resume=False)
            return False
        handle.next_prefork = False  # the kept state forks its next runner when a run comes
        handle.discard_stale()  # what the live state sent between runs
        handle.pid = kept  # (spared below, with the keeper and init)
        kill_tree(kept, include_root=False)
        handle.unit.kill(spare=handle.sandbox_processes())
        handle.unit.release(kept, resume=True)
        try:
            if await handle.recv_rollback(run_id or 0, timeout=10):
                return True
        except (TimeoutError, OSError):
            pass
        kill_tree(kept)
        handle.unit.kill()
        handle.alive = False
        raise SandboxError("the state from before the last run could not be restored; the "
                           "session was stopped and its variables are lost")

    @staticmethod
    def _kill_run(handle: WorkerHandle) -> None:
        """Kill everything of the session but its checkpoint (which then rolls back)."""
        kill_tree(handle.pid, include_root=False)
        handle.unit.kill(spare=handle.sandbox_processes())

    @classmethod
    def _run_usage(cls, handle: WorkerHandle, before: dict[str, Any], runner: int,
                   watchdog: Watchdog | None) -> dict[str, float]:
        """A run's CPU time and peak memory: its unit's where cgroups measure them; the
        runner's /proc stat (an open and a read on the reply's path) only where they do not."""
        cpu = handle.unit.cpu_seconds() if before.get("cpu") is not None else None
        peak = handle.unit.memory_peak_mb()
        if cpu is not None and peak is not None:
            return {"cpu_seconds": round(cpu - before["cpu"], 3), "memory_mb": round(peak, 1)}
        runner_cpu, rss = read_usage(runner)
        return {"cpu_seconds": cls._cpu(handle, before, runner_cpu),
                "memory_mb": cls._peak_mb(handle, rss, watchdog)}

    @staticmethod
    def _peak_mb(handle: WorkerHandle, rss_mb: float, watchdog: Watchdog | None) -> float:
        unit_peak = handle.unit.memory_peak_mb()
        if unit_peak is not None:
            return round(unit_peak, 1)
        return max(rss_mb, watchdog.peak_rss / MB if watchdog else 0.0)

    @staticmethod
    def _cpu(handle: WorkerHandle, before: dict[str, Any], runner_cpu: float) -> float:
        """This run's CPU time: the whole unit's (threads left in the checkpoint and children
        included) where cpuacct measures it, else the runner's own."""
        now = handle.unit.cpu_seconds()
        if now is None or before.get("cpu") is None:
            return runner_cpu
        return round(now - before["cpu"], 3)

    @staticmethod
    def _account_oom(handle: WorkerHandle, before: dict[str, Any], outcome: RunOutcome,
                     limits: ResourceLimits) -> None:
        """A process the kernel's OOM killer took inside the unit is a memory_mb violation."""
        if outcome.violation is None and handle.unit.oom_kills() > before["oom"]:
            peak = handle.unit.memory_peak_mb()
            outcome.violation = ("memory_mb", None if peak is None else round(peak, 1),
                                 limits.memory_mb)
            outcome.crashed = None

    def _ended_early(self, handle: WorkerHandle, frame: dict[str, Any] | None,
                     outcome: RunOutcome, checkpoint: bool) -> RunOutcome:
        if frame is not None and frame.get("ev") == "done" and not checkpoint:
            outcome.frame = frame
            return outcome
        if checkpoint and frame is not None and frame.get("ev") == "done":
            raise protocol.ProtocolError("a run reported done before it started")
        if frame is not None and frame.get("ev") == "rolled_back":
            outcome.rolled_back = True
            if frame.get("fork_error"):  # the checkpoint could not even fork a runner
                outcome.violation = ("max_processes", "the session could not start a process "
                                     f"for this run ({frame['fork_error']})", None)
                return outcome
            outcome.crashed = "the sandboxed process " + describe_status(frame.get("status"))
            return outcome
        if frame is not None and frame.get("ev") == "timeout":
            outcome.violation = ("timeout_seconds", None, None)
        else:
            outcome.crashed = ("the sandboxed process ended abruptly (os._exit, a crash or a "
                               "signal)" if frame is None else f"unexpected frame {frame}")
        if checkpoint and handle.alive and frame is not None:
            self._kill_run(handle)
        else:
            self._kill_all(handle)
        return outcome

    async def _await_rollback(self, handle: WorkerHandle, run_id: int, runner: int) -> bool:
        """After the runner is gone the checkpoint resumes and says so."""
        if not _alive(handle.pid):  # the checkpoint itself was killed: the state is lost
            handle.unit.kill()
            handle.alive = False
            return False
        try:
            if await handle.recv_rollback(run_id, timeout=10):
                return True
        except (TimeoutError, OSError):
            pass
        self._kill_all(handle)
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


def _stat(pid: int) -> list[bytes]:
    """The fields of /proc/<pid>/stat after the command (state first); [] if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()
    except OSError:
        return []


def _start_time(pid: int) -> int:
    try:
        return int(_stat(pid)[19])
    except (IndexError, ValueError):
        return 1 << 62


def _parent(pid: int) -> int:
    try:
        return int(_stat(pid)[1])
    except (IndexError, ValueError):
        return -1


def _birth(pid: int) -> tuple[int, int]:
    """(start time, pid): the later born of two processes sorts last (pids grow between two
    clock ticks); a process already gone sorts first."""
    start = _start_time(pid)
    return (-1 if start == 1 << 62 else start, pid)


def _alive(pid: int) -> bool:
    state = _stat(pid)
    return bool(state) and state[0] != b"Z"
