"""ProcessSandbox: each execution in a separate, confined process; sessions that roll back."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from agenticraft.sandbox import host_report as host_probe
from agenticraft.sandbox.base import OutputCallback, Sandbox
from agenticraft.sandbox.egress.pool import EgressPool
from agenticraft.sandbox.profile import (
    PROFILE_ENV,
    build_profile,
    check_host_code,
    make_maskable,
    manager_files,
)
from agenticraft.sandbox.result import ExecutionError, ExecutionResult, RunReply
from agenticraft.sandbox.supervisor import RunOutcome, Supervisor
from agenticraft.sandbox.types import SandboxType
from agenticraft.sandbox.watchdog import IdleWatch
from agenticraft.sandbox.workers import WorkerHandle
from agenticraft.security import records
from agenticraft.security.context import SecurityContext
from agenticraft.wire import network
from agenticraft.wire.errors import (
    ChannelAbuse,
    NothingToUndo,
    ResourceLimitExceeded,
    SandboxError,
    SandboxUnavailable,
    SecurityViolation,
    limit_message,
)
from agenticraft.wire.limits import ResourceLimits, Usage

T = TypeVar("T")


class ProcessSandbox(Sandbox):
    """Runs code in a forked, confined worker (rlimits, namespaces, Landlock, seccomp)."""

    sandbox_type = SandboxType.PROCESS
    executor = "exec"
    #: A network namespace without a route out that the workers already run in, when they
    #: cannot make their own (the container sandbox's, network_mode none); here none.
    isolated_by: str | None = None

    def __init__(self, manager: Any) -> None:
        super().__init__(manager)
        self.supervisor = Supervisor(host_probe.disabled_from_env(),
                                     tuple(getattr(manager, "process_preload", ())),
                                     share_pages=host_probe.share_pages_from_env())
        self._started = False
        self._report: tuple[Any, dict[str, str]] = (None, {})
        #: ``enforced_for`` per (network, filesystem, write), for the mechanisms they describe.
        self._enforced: tuple[Any, dict[tuple[Any, ...], dict[str, str]]] = (None, {})
        #: ``build_profile``'s results (``_built_profile``): key -> (mechanisms, policy, profile)
        self._profiles: dict[tuple[Any, ...], tuple[Any, Any, dict[str, Any]]] = {}
        # Allow-listed network: one host-side egress proxy per (list, user), see sandbox/egress.
        self.egress = EgressPool(manager.audit.record, getattr(manager, "egress_resolver", None))

    @classmethod
    def probe(cls) -> list[str]:
        missing = []
        if not sys.platform.startswith("linux"):
            missing.append("Linux (fork, /proc, prctl)")
        try:
            import resource  # noqa: F401
        except ImportError:
            missing.append("the resource module")
        return missing

    async def start(self) -> None:
        if not self._started:
            await self.supervisor.astart(
                require=functools.partial(host_probe.check_required, self.manager.policy))
            self._started = True

    async def close(self) -> None:
        if self._started:
            self.supervisor.close()
            self._started = False
        self.egress.close()

    def host_report(self) -> dict[str, str]:
        # Every result carries it: made once per zygote start (its mechanisms), copied per run.
        mechanisms = self.supervisor.mechanisms
        if self._report[0] is not mechanisms:
            self._report = (mechanisms, host_probe.limit_enforcement(mechanisms))
        return dict(self._report[1])

    def enforced_for(self, ctx: SecurityContext) -> dict[str, str]:
        # Every result carries it: made once per kind of context and zygote start, copied.
        limits = ctx.resource_limits
        key = (limits.network_access, bool(limits.filesystem_access), ctx.has_permission("write"))
        mechanisms = self.supervisor.mechanisms
        if self._enforced[0] is not mechanisms:
            self._enforced = (mechanisms, {})
        made = self._enforced[1].get(key)
        if made is None:
            made = self.host_report()
            made["network_access"] = host_probe.network_enforcement(
                limits.network_access, mechanisms, isolated_by=self.isolated_by)
            if limits.filesystem_access:
                mode = "read-write" if key[2] else "read-only"
                made["filesystem_access"] = (f"working directory {mode}; "
                                             + made["filesystem_access"])
            self._enforced[1][key] = made
        return dict(made)

    async def supervisor_for(self, ctx: SecurityContext) -> Supervisor:
        """The started supervisor whose zygote runs ``ctx``'s workers: the one of this sandbox
        (the container sandbox has one per container profile)."""
        await self.start()
        return self.supervisor

    def profile_for(self, ctx: SecurityContext, executor: str | None = None,
                    supervisor: Supervisor | None = None) -> dict[str, Any]:
        profile = self._built_profile(ctx, executor or self.executor,
                                      supervisor or self.supervisor)
        if network.is_allow_list(ctx.resource_limits.network_access):
            if self.isolated_by:  # the workers' INET sockets only ever reach that namespace
                profile["isolated_network"] = True
            elif not (supervisor or self.supervisor).mechanisms["namespaces"]["active"]:
                raise SandboxUnavailable(
                    self.sandbox_type.value, ["a private network namespace"],
                    "network_access allow-lists need a private network namespace (unprivileged "
                    "user namespaces), which this host lacks: without one the sandbox would "
                    "share the host's network. Ask for network_access=False, or run on a host "
                    "where `doctor` shows namespaces available.")
            endpoint = self.egress.endpoint_for(ctx)
            assert endpoint is not None
            socket_path, profile["egress_key"] = endpoint
            profile["egress_socket"] = socket_path
            # The proxy's directory (0700, only its socket) is bound read-only into the
            # private root: connecting needs no write access, and no other host socket shows.
            profile["read_paths"] = sorted({*profile["read_paths"],
                                            os.path.dirname(socket_path)})
        return profile

    async def run(self, code: str, ctx: SecurityContext,
                  on_output: OutputCallback | None = None) -> ExecutionResult:
        supervisor = await self.supervisor_for(ctx)
        handle = await supervisor.spawn(self.profile_for(ctx, supervisor=supervisor),
                                        prefork=True)
        self.egress.begin_run(ctx)
        try:
            outcome = await supervisor.run_lean(handle, code, ctx.resource_limits,
                                                on_output=on_output, extra=self.run_extra(ctx),
                                                one_shot=True)
        except BaseException:  # cancelled (an interrupt) or failed: the code may still run
            supervisor.discard(handle)
            raise
        if handle.alive:
            supervisor.release(handle)
        else:  # a limit or a crash: everything it started ends with it
            supervisor.discard(handle)
        return to_result(outcome, self.sandbox_type.value, self.enforced_for(ctx))

    def _built_profile(self, ctx: SecurityContext, executor: str, supervisor: Supervisor,
                       ) -> dict[str, Any]:
        """``build_profile``'s result for ``ctx`` (checked by ``check_host_code``), a fresh copy.
        Built once per limits, working directory, write permission, executor, zygote, policy
        and host environment (``PROFILE_ENV``): resolving its paths again took a tenth of a
        pre-forked run after idle. What must be true before each sandbox's mounts are made is
        still done each time: the audit log exists, a home's secret directories exist."""
        key = (ctx.resource_limits, ctx.working_dir, ctx.has_permission("write"), executor,
               supervisor.zygote.scratch_root, *(os.environ.get(name) for name in PROFILE_ENV))
        mechanisms, policy = supervisor.mechanisms, self.manager.policy
        made = self._profiles.get(key)
        if made is not None and made[0] is mechanisms and made[1] is policy:
            profile = made[2]
            with contextlib.suppress(Exception):  # (as manager_files does)
                self.manager.audit.ensure_exists()
            if profile["workdir"] is not None:
                make_maskable(profile["workdir"])
        else:
            profile = build_profile(ctx, scratch_root=supervisor.zygote.scratch_root,
                                    protect=manager_files(self.manager))
            profile["executor"] = executor
            check_host_code(profile, mechanisms, self.sandbox_type.value)
            if len(self._profiles) >= 64:
                self._profiles.clear()
            self._profiles[key] = (mechanisms, policy, profile)
        return {name: list(value) if isinstance(value, list) else value
                for name, value in profile.items()}

    def run_extra(self, ctx: SecurityContext) -> dict[str, Any]:
        return {}

    def session(self, context: SecurityContext | Mapping[str, Any] | None = None,
                **kwargs: Any) -> ProcessSession:
        """A long-lived worker keeping its variables across ``run`` calls, rolled back when a
        run is killed. Authorized now; started on first use (or ``await session.start()``)."""
        ctx = self.manager.authorize(context, "execute", sandbox_type=self.sandbox_type.value,
                                     action="session")
        return ProcessSession(self, ctx, **kwargs)


#: Why a session cannot undo (``NothingToUndo``'s message, and the audit record's reason).
UNDO_NEVER = ("no run has finished in this session yet (a run rolled back after a limit does "
              "not count)")
UNDO_DONE = ("the last run was already undone: one earlier state is kept, so undo works once "
             "after each run")
UNDO_REPLACED = ("the session was replaced after its state was lost (a limit hit between runs, "
                 "a crash, or a run that could not be rolled back), and the state from before "
                 "the last run was lost with it")
UNDO_GONE = ("the kept state from before the last run was killed (with the session's processes "
             "or by the memory limit); the session itself is as it was")
UNDO_OFF = "this session keeps no undo state (start it with undo=True)"


class ProcessSession:
    """A stateful sandbox session (kernel cells, multi-step agents).

    ``undo=True``: the session keeps the state from before its last run (the checkpoint that
    run forked from, stopped) so that :meth:`undo` can go back to it, once. It costs one more
    process of the sandbox's own and its memory: the pages the live state has changed since.
    """

    def __init__(self, sandbox: ProcessSandbox, ctx: SecurityContext, *,
                 executor: str | None = None, undo: bool = False,
                 loopback: bool = False) -> None:
        self.sandbox = sandbox
        self.context = ctx
        self.executor = executor
        self.keep_undo = undo
        #: The worker's own network namespace gets its loopback up, with TCP allowed on it (a
        #: debugger's sockets): still no route out, and nothing of the host's network.
        self.loopback = loopback
        self._undo_note = UNDO_NEVER if undo else UNDO_OFF  # why there is nothing to undo
        self.handle: WorkerHandle | None = None
        self.supervisor: Supervisor | None = None  # set by start(): the one holding the worker
        self._lock = asyncio.Lock()
        self._interrupt: asyncio.Event | None = None
        self._idle: IdleWatch | None = None
        self._lost: tuple[str, Any, Any] | None = None  # set when killed between runs
        self._pinned: WorkerHandle | None = None  # the worker that runs all its runs itself

    def _watch_idle(self) -> None:
        self._stop_idle()  # never two watches: one left running would judge the next run
        handle = self.handle
        if handle is not None and handle.alive:
            limits = self.context.resource_limits  # a run may have tightened the unit's
            handle.unit.set_limits(limits.memory_mb, limits.cpu_percent,
                                   limits.max_processes, handle.reserved)
            args = (handle.pid, limits, handle.scratch)
            kwargs = {"unit": handle.unit, "spare": handle.sandbox_processes()[1:]}
            if self._idle is None:
                self._idle = IdleWatch(*args, self._killed_while_idle, **kwargs)
            else:  # the session's watch thread, woken
                self._idle.resume(*args, **kwargs)

    def _killed_while_idle(self, violation: tuple[str, Any, Any]) -> None:
        self._lost = violation
        self.sandbox.manager.audit.record(records.limit_violation(
            self.context.user_id, *violation, sandbox_type=self.sandbox.sandbox_type.value,
            detail="between runs"))

    def _stop_idle(self, *, end: bool = False) -> None:
        """Pause the idle watch (a run watches for itself); ``end``: the session ends."""
        if self._idle is not None:
            if end:
                self._idle.stop()
                self._idle = None
            else:
                self._idle.pause()

    async def start(self) -> None:
        if self.handle is None or not self.handle.alive:
            self.supervisor = await self.sandbox.supervisor_for(self.context)
            profile = self.sandbox.profile_for(self.context, self.executor, self.supervisor)
            profile["undo_state"] = self.keep_undo  # confine reserves its process
            profile["loopback"] = self.loopback
            self.handle = await self.supervisor.spawn(profile, prefork=False, session=True)
            self.sandbox.manager.audit.record(records.session(self.context.user_id, "started",
                                                              pid=self.handle.pid))
            self._watch_idle()

    @property
    def running(self) -> bool:
        """True while a run is in progress (an interrupt would reach it)."""
        return self._interrupt is not None

    @property
    def pid(self) -> int | None:
        return self.handle.pid if self.handle else None

    def interrupt(self) -> None:
        """Interrupt the running code (KeyboardInterrupt; killed and rolled back if ignored)."""
        if self._interrupt is not None:
            self._interrupt.set()

    def send(self, message: dict[str, Any]) -> None:
        """Send a message to the executor (e.g. an input reply while the code waits for it)."""
        if self.handle is None or not self.handle.alive:
            raise SandboxError("the session is not running")
        self.handle.send(message)

    async def run(self, code: str, *, on_output: OutputCallback | None = None,
                  limits: ResourceLimits | None = None, grace: float = 2.0) -> ExecutionResult:
        """Run ``code`` in the session (the agent API; audited). A limit raises
        ``ResourceLimitExceeded`` with ``rolled_back=True``: the variables are as they were
        before this run. ``limits`` tightens this run only (already resolved by the caller);
        ``grace`` is how long an interrupted run may take to stop before it is killed."""
        ctx = self._context_for(limits)

        async def audited(handle: WorkerHandle) -> ExecutionResult:
            async def once() -> ExecutionResult:
                outcome = await self._exchange(handle, code, ctx, on_output, None, None, grace,
                                               self.keep_undo)
                return to_result(outcome, self.sandbox.sandbox_type.value,
                                 self.sandbox.enforced_for(ctx), session=True)
            return await self.sandbox.manager.audited(self.sandbox.sandbox_type.value, code, ctx,
                                                      once)

        return await self._in_turn(audited)

    async def request(self, code: str, *, on_output: OutputCallback | None = None,
                      on_event: Callable[[dict[str, Any]], Any] | None = None,
                      extra: dict[str, Any] | None = None, limits: ResourceLimits | None = None,
                      grace: float = 2.0, undoable: bool = True,
                      checkpoint: bool = True,
                      pin: Callable[[RunReply], bool] | None = None) -> RunReply:
        """Send an executor-defined request (the kernel's cells, completions, comms) and
        return the executor's reply. Writes no audit record: the caller owns it (the kernel
        records a cell with its kernel id, and does not audit completions). Limits, rollback
        and ``grace`` as in ``run``; ``extra`` goes to the executor with the code.
        ``undoable=False``: the run does not become the one :meth:`undo` takes back (the
        kernel's completions and comm messages); the undo state stays as it was.
        ``checkpoint=False``: the live worker runs it itself, unforked; a limit then ends the
        session instead of rolling it back. ``pin(reply)`` true: so do all later runs of this
        worker (its executor now keeps threads a fork would lose, such as a debugger's): see
        ``pinned``."""
        ctx = self._context_for(limits)

        async def once(handle: WorkerHandle) -> RunReply:
            forked = checkpoint and handle is not self._pinned
            outcome = await self._exchange(handle, code, ctx, on_output, on_event, extra, grace,
                                           self.keep_undo and undoable and forked, forked)
            reply = to_reply(outcome, self.sandbox.enforced_for(ctx), session=True)
            if pin is not None and handle.alive and pin(reply):
                self._pinned = handle  # decided in turn: the next run already sees it
            return reply

        return await self._in_turn(once)

    @property
    def pinned(self) -> bool:
        """True when the session's worker runs every run itself (see ``request``'s ``pin``)
        until it is replaced: no rollback and no new undo state until then."""
        return self.handle is not None and self.handle is self._pinned

    async def undo(self) -> None:
        """Go back to the state from before the last run (variables rebound, deleted or mutated
        by it are as they were; processes and threads it started are killed; threads the state
        had then resume). Once: the state before that is not kept. A run rolled back after a
        limit changed nothing, so undo then takes back the run before it. Audited. Raises
        ``NothingToUndo`` (nothing changed) when there is no such state, saying why."""
        user = self.context.user_id
        audit = self.sandbox.manager.audit

        async def once(handle: WorkerHandle) -> None:
            assert self.supervisor is not None
            self._interrupt = None  # nothing to interrupt: no code runs
            if handle.undo is None:
                raise NothingToUndo(self._undo_note)
            try:
                restored = await self.supervisor.undo(handle)
            finally:
                if not handle.alive:
                    self._drop(handle)
            self._undo_note = UNDO_DONE if restored else UNDO_GONE
            if not restored:
                raise NothingToUndo(UNDO_GONE)

        try:
            await self._in_turn(once)
        except NothingToUndo as exc:
            audit.record(records.session_undo(user, "refused", reason=str(exc)))
            raise
        except SandboxError as exc:
            audit.record(records.session_undo(user, "failed", reason=str(exc)))
            raise
        audit.record(records.session_undo(user, "restored", pid=self.pid))

    @property
    def can_undo(self) -> bool:
        """True when :meth:`undo` has a state to go back to (it may still find it gone)."""
        return self.handle is not None and self.handle.undo is not None

    def undo_status(self) -> tuple[bool, str]:
        """(True, "") when :meth:`undo` has a state to go back to, else (False, why not: the
        message :meth:`undo` would refuse with)."""
        return (True, "") if self.can_undo else (False, self._undo_note)

    def _drop(self, handle: WorkerHandle) -> None:
        """The session's worker is gone: the next run starts a fresh one (with no undo state)."""
        handle.close()
        self.handle = None
        if self.keep_undo:
            self._undo_note = UNDO_REPLACED

    def _context_for(self, limits: ResourceLimits | None) -> SecurityContext:
        ctx = self.context
        if limits is None:
            return ctx
        narrowed = ctx.copy()  # every field (image and groups too), only the limits differ
        narrowed.resource_limits = limits
        narrowed.resolved = ctx.resolved
        return narrowed

    async def _in_turn(self, work: Callable[[WorkerHandle], Awaitable[T]]) -> T:
        """Run ``work`` on the session's worker, one run at a time, watched while idle."""
        async with self._lock:
            self._stop_idle()
            if self._lost is not None:
                limit, value, allowed = self._lost
                self._lost = None
                if self.handle is not None:
                    self._drop(self.handle)
                raise ResourceLimitExceeded(
                    limit, value, allowed,
                    "Code left running after an earlier run (a thread or a process) went over "
                    f"{limit} (allowed {allowed}, reached {value}), so the session was stopped "
                    "and its variables are lost. This run did not start; run it again to start "
                    "a fresh session.")
            await self.start()
            self._stop_idle()  # a session started just now began watching: the run watches now
            assert self.handle is not None
            self._interrupt = asyncio.Event()
            try:
                return await work(self.handle)
            finally:
                self._watch_idle()

    async def _exchange(self, handle: WorkerHandle, code: str, ctx: SecurityContext,
                        on_output: OutputCallback | None, on_event: Any,
                        extra: dict[str, Any] | None, grace: float,
                        keep_undo: bool = False, checkpoint: bool = True) -> RunOutcome:
        assert self.supervisor is not None
        self.sandbox.egress.begin_run(ctx, cell_id=(extra or {}).get("cell_id"))
        try:
            outcome = await self.supervisor.run(
                handle, code, ctx.resource_limits, on_output=on_output, checkpoint=checkpoint,
                extra={**self.sandbox.run_extra(ctx), **(extra or {})},
                interrupt=self._interrupt, on_event=on_event, grace=grace, keep_undo=keep_undo)
        finally:
            self._interrupt = None
            if not handle.alive:
                self._drop(handle)
        return outcome

    async def close(self) -> None:
        self._stop_idle(end=True)
        if self.handle is not None and self.supervisor is not None:
            self.supervisor.discard(self.handle)
            self.handle = None

    async def __aenter__(self) -> ProcessSession:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def raise_for_violation(outcome: RunOutcome) -> None:
    """Raise what stopped the run: a limit, the code policy, or a broken worker protocol."""
    frame = outcome.frame or {}
    limit = outcome.violation
    message = None
    if limit is None and "limit" in frame:
        info = frame["limit"] if isinstance(frame["limit"], dict) else {}
        limit = (str(info.get("limit", "unknown")), info.get("value"), info.get("allowed"))
        if isinstance(info.get("detail"), str):  # what the sandbox saw, as text, bounded
            message = f"{limit_message(*limit)} Cause: {info['detail'][:400]}"
    if limit is not None:
        raise ResourceLimitExceeded(*limit, message, rolled_back=outcome.rolled_back,
                                    usage=Usage.measured(outcome.usage), stdout=outcome.stdout,
                                    stderr=outcome.stderr)
    if "violation" in frame and isinstance(frame["violation"], dict):
        info = frame["violation"]
        raise SecurityViolation(str(info.get("message", "security violation")),
                                lineno=info.get("lineno"), construct=info.get("construct"))
    if (outcome.crashed and "protocol" in outcome.crashed) or (
            outcome.crashed and "control channel" in outcome.crashed):
        raise ChannelAbuse(outcome.crashed)


def unfinished(outcome: RunOutcome, session: bool) -> ExecutionError | None:
    """Why the run did not finish (a crash, an interrupt it did not honour), or None."""
    if outcome.crashed:
        note = " The session was rolled back to its state before this run." if (
            session and outcome.rolled_back) else ""
        return ExecutionError("WorkerExited", outcome.crashed + "." + note)
    if outcome.interrupted and not outcome.frame:
        return ExecutionError("KeyboardInterrupt", "interrupted; the code did not stop in time "
                              "and was killed" + (", the session was rolled back"
                                                  if outcome.rolled_back else ""))
    return None


def reported_error(frame: dict[str, Any]) -> ExecutionError | None:
    """The error the worker reported for code that raised (data from the sandbox, as text)."""
    info = frame.get("error")
    if not isinstance(info, dict):
        return None
    return ExecutionError(str(info.get("ename", "Error")), str(info.get("evalue", "")),
                          str(info.get("traceback", "")))


def to_result(outcome: RunOutcome, sandbox_type: str, enforced: dict[str, str], *,
              session: bool = False) -> ExecutionResult:
    """Turn what the supervisor saw into an ExecutionResult, or raise for a violation."""
    raise_for_violation(outcome)
    frame = outcome.frame or {}
    error = unfinished(outcome, session)
    success = error is None and bool(frame.get("ok"))
    error = error or reported_error(frame)
    values = frame.get("values") if isinstance(frame.get("values"), dict) else {}
    return ExecutionResult(values, success=success, error=error, stdout=outcome.stdout,
                           stderr=outcome.stderr,
                           resource_usage=Usage.measured(outcome.usage).as_dict(),
                           execution_time_ms=round(outcome.wall * 1000, 3),
                           sandbox_type=sandbox_type, enforced=enforced,
                           truncated=outcome.truncated, outputs=tuple(outcome.outputs))


def to_reply(outcome: RunOutcome, enforced: dict[str, str], *,
             session: bool = False) -> RunReply:
    """Turn what the supervisor saw into the executor's reply, or raise for a violation."""
    raise_for_violation(outcome)
    frame = outcome.frame or {}
    error = unfinished(outcome, session)
    success = error is None and bool(frame.get("ok"))
    reply = frame.get("values") if isinstance(frame.get("values"), dict) else {}
    return RunReply(reply, success=success, error=error or reported_error(frame),
                    stdout=outcome.stdout, stderr=outcome.stderr,
                    usage=Usage.measured(outcome.usage),
                    execution_time_ms=round(outcome.wall * 1000, 3), enforced=enforced,
                    truncated=outcome.truncated)


__all__ = ["ProcessSandbox", "ProcessSession"]
