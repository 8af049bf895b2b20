"""``SecureKernel``: the parent kernel. It never runs user code.

It resolves the kernel's ``SecurityContext`` through the administrator's policy, opens one
process-sandbox session per notebook, and relays the Jupyter protocol: cells, completion,
inspection, ``input()``, comms and interrupts go to the confined worker; its frames come back as
IOPub messages under the frontend's parent header. The event loop only ever *awaits* the worker,
so heartbeats, interrupts, shutdown and ``kernel_info`` requests are answered while a cell runs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import os
import signal
import sys
import time
from collections import deque
from contextvars import copy_context
from pathlib import Path
from typing import Any

import zmq
from ipykernel import kernel_protocol_version
from ipykernel.kernelbase import Kernel
from traitlets import Any as AnyTrait
from traitlets import Bool, Dict, Float, Int, List, Unicode, default

from agenticraft.sandbox import SandboxManager
from agenticraft.sandbox.result import Output
from agenticraft.security.context import SecurityContext, current_user
from agenticraft.security.policy import load_policy
from agenticraft.wire.codec import to_safe
from agenticraft.wire.errors import (
    ChannelAbuse,
    ConfigurationError,
    PermissionDenied,
    ResourceLimitExceeded,
    SandboxError,
    SandboxUnavailable,
    SecurityException,
)
from agenticraft_kernel import __version__
from agenticraft_kernel.parent import fidelity, magic_detect
from agenticraft_kernel.parent.backends import RestrictedBackend, SessionBackend, make_backend
from agenticraft_kernel.parent.cell_audit import KernelAudit
from agenticraft_kernel.parent.cell_state import CellState
from agenticraft_kernel.parent.comms import CommTable
from agenticraft_kernel.parent.debug import DebugRelay, code_of, failed
from agenticraft_kernel.parent.history import CellHistory
from agenticraft_kernel.parent.kernel_context import PRELOAD, build_request, notebook_defaults
from agenticraft_kernel.parent.magics import KernelMagics
from agenticraft_kernel.parent.output_policy import OutputPolicy
from agenticraft_kernel.parent.panel_host import PanelHost
from agenticraft_kernel.parent.relay import Relay
from agenticraft_kernel.parent.replies import error_reply
from agenticraft_kernel.parent.start_gate import StartGate
from agenticraft_kernel.parent.stdin import StdinServer
from agenticraft_kernel.parent.undo import undo_line
from agenticraft_kernel.views import audit_table as audit_view
from agenticraft_kernel.views.panel import make_panel

#: Shell messages answered without the worker: served at once even while a cell runs.
PARENT_ONLY = frozenset({"kernel_info_request", "comm_info_request", "connect_request",
                         "is_complete_request", "history_request"})
COMM_MESSAGES = frozenset({"comm_open", "comm_msg", "comm_close"})
#: How long a ``kernel_info`` request waits for the kernel's context to be decided (policy and
#: limits: whether the debugger can run in its sandbox). Not for the sandbox's start, which may
#: wait its turn at the start gate; later requests are answered at once.
KERNEL_INFO_WAIT = 10.0
LOST_STATE = (" The sandbox session could not be restored and was restarted: variables from "
              "earlier cells are gone.")
RECENT_CELLS = 20
#: Sandbox starts tried at kernel start-up before cells report the failure (each request then
#: tries once more).
START_ATTEMPTS = 3
Backend = SessionBackend | RestrictedBackend


def startup_may_succeed_later(exc: BaseException) -> bool:
    """A sandbox start that failed in the machinery (a timeout, a process that exited), not
    one the policy or the host refused."""
    if isinstance(exc, SandboxUnavailable | PermissionDenied | ConfigurationError):
        return False
    return isinstance(exc, SandboxError | OSError | TimeoutError)


def kernel_id_from(connection_file: str) -> str:
    """Jupyter names connection files ``kernel-<id>.json``: the id the server shows."""
    name = Path(connection_file or "").name
    if name.startswith("kernel-") and name.endswith(".json"):
        return name[len("kernel-"):-len(".json")]
    return name or "unknown"


class SecureKernel(Kernel):
    """The AgentiCraft Secure kernel (see the module docstring)."""

    implementation = "agenticraft-secure"
    implementation_version = __version__
    banner = (f"AgentiCraft Secure {__version__} - IPython {sys.version.split()[0]} in a "
              "sandbox; limits and the audit trail follow the administrator's policy")
    language_info = {
        "name": "python",
        "version": sys.version.split()[0],
        "mimetype": "text/x-python",
        "codemirror_mode": {"name": "ipython", "version": sys.version_info[0]},
        "pygments_lexer": "ipython3",
        "nbconvert_exporter": "python",
        "file_extension": ".py",
    }
    help_links = List([
        {"text": "Python Reference",
         "url": "https://docs.python.org/{}.{}".format(*sys.version_info[:2])},
        {"text": "IPython Reference", "url": "https://ipython.readthedocs.io/en/stable/"},
    ])

    msg_types = [*Kernel.msg_types, *sorted(COMM_MESSAGES)]
    # No subshells: only what this kernel really serves.
    control_msg_types = [*msg_types, "usage_request", "debug_request"]

    # -- configuration (c.SecureKernel.*) --------------------------------------------------------
    sandbox_type = Unicode(None, allow_none=True, help="""Sandbox for cells: "process"
        (default, IPython in a confined process), "container" (the same, in a warm container;
        alias "docker") or "restricted". The policy must allow it.""",
                           ).tag(config=True)
    user_id = Unicode(None, allow_none=True, help="""User the cells run as; default
        JUPYTERHUB_USER, else the OS user.""").tag(config=True)
    limits = Dict(help="""Resource limits requested for every cell, e.g.
        {"memory_mb": 256, "timeout_seconds": 60}. Above the policy's ceilings the kernel
        refuses to run cells (PermissionDenied).""").tag(config=True)
    policy_files = List(Unicode(), help="""Extra policy files; they can only tighten the
        system policy (/etc/agenticraft/policy.toml).""").tag(config=True)
    audit_log = Unicode(None, allow_none=True, help="""Audit log path (default: the
        engine's setting, AGENTICRAFT_AUDIT_LOG or ~/.local/state/agenticraft/audit.jsonl).""",
                        ).tag(config=True)
    kernel_id = Unicode(help="Kernel id for audit records (default: from the connection file)")
    start_slots = Int(os.cpu_count() or 1, help="""How many of this user's kernels may start
        their sandbox at the same time (0: no limit); the others wait their turn (see
        parent.start_gate). Kernels answer kernel_info meanwhile.""").tag(config=True)

    # ipykernel sleeps this long after every cell before its reply, to let its stdout/stderr
    # streams reach IOPub first (a "FIXME ... mitigates the problem" in kernelbase). This
    # kernel's cell output is published before the reply by the relay itself, on the IOPub
    # thread's one queue, and the parent's own streams are not IOPub streams: nothing to wait
    # for. (0.5 ms asked, ~0.6-1 ms slept, on every cell.)
    _execute_sleep = Float(0.0)
    enable_debugger = Bool(True, help="""Offer JupyterLab's debugger (debugpy inside the
        sandbox). It needs TCP on the loopback of the sandbox's own network namespace, so the
        worker may open INET sockets there (no route leads out of it). False: the worker keeps
        AF_UNIX sockets only and the kernel advertises no debugger.""").tag(config=True)

    # Accepted from IPKernelApp.init_kernel, unused by this kernel.
    user_ns = AnyTrait(None)
    debugpy_stream = AnyTrait(None)

    @default("kernel_id")
    def _kernel_id_default(self) -> str:
        return kernel_id_from(getattr(self.parent, "connection_file", "") or "")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.history = CellHistory()
        self.comms = CommTable()
        self.manager: SandboxManager | None = None
        self.backend: Backend | None = None
        self.kaudit: KernelAudit | None = None
        self._boot: asyncio.Task[None] | None = None
        self._boot_error: BaseException | None = None
        self._decided = asyncio.Event()  # the context is resolved (or refused): see kernel_info
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        self.cell = CellState(self._interrupt_session)
        self.magics = KernelMagics(self)
        #: The kernel's newest cell records (what the panel's "last cells" shows).
        self.recent_cells: deque[dict[str, Any]] = deque(maxlen=RECENT_CELLS)
        self.panels = PanelHost(self._make_panel, log=self.log)
        self.output_policy = OutputPolicy()
        self.stdin_server = StdinServer()
        self._usage = fidelity.SandboxUsage()
        self._debug_parent: dict[str, Any] = {}
        self.debug = DebugRelay(self._debug_run, self._debug_send, self._debug_running,
                                self._publish_debug, lambda: self.output_policy)

    # -- start-up --------------------------------------------------------------------------------
    def start(self) -> None:
        super().start()
        self._loop = asyncio.get_event_loop()
        self._loop.add_signal_handler(signal.SIGINT, self.interrupt_cell)
        self._boot = self._loop.create_task(self._boot_sandbox())

    async def _boot_sandbox(self, attempts: int = START_ATTEMPTS) -> None:
        """``_start_sandbox``, tried up to ``attempts`` times while it fails in the machinery:
        a zygote that does not answer within its time is usually one of many starting at once,
        and the next attempt finds the machine less busy."""
        for attempt in range(attempts):
            if attempt or self._boot_error is not None:
                self.log.warning("AgentiCraft Secure starts its sandbox again after: %s",
                                 self._boot_error)
                await self._discard_sandbox()
                self._boot_error = None
            await self._start_sandbox()
            if self._boot_error is None or not startup_may_succeed_later(self._boot_error):
                return

    async def _start_sandbox(self) -> None:
        """Resolve the context through the policy and start the worker, in the background so
        the kernel answers ``kernel_info`` at once. A refusal is reported on every cell."""
        request = None
        try:
            request = build_request(user_id=self.user_id, sandbox_type=self.sandbox_type,
                                    limits=self.limits, policy_files=self.policy_files)
            self.manager = SandboxManager(
                policy=load_policy(extra=request.policy_files), audit_log=self.audit_log or None,
                working_dir=os.getcwd(), process_preload=PRELOAD)
            self.kaudit = KernelAudit(self.manager.audit, self.kernel_id,
                                      on_cell=self.recent_cells.append)
            overrides = notebook_defaults(request.limit_overrides,
                                          self.manager.settings.limit_defaults,
                                          self.manager.policy.ceilings.filesystem_access)
            self.output_policy = OutputPolicy(self.manager.policy.allow_output_scripts)
            ctx = self.manager.authorize(request.context_request(), "execute",
                                         action="kernel_start", limit_overrides=overrides)
            self.backend = make_backend(self.manager, ctx, self.enable_debugger)
            self._decided.set()
            async with StartGate(self.start_slots).slot():
                await self.backend.start()
            self.kaudit.kernel_event("kernel_started", ctx.user_id, ctx,
                                     worker_pid=self.backend.pid, pid=os.getpid())
        except Exception as exc:
            self._boot_error = exc
            self._decided.set()
            self.log.error("AgentiCraft Secure could not start its sandbox: %s", exc)
            if self.kaudit is not None:
                self.kaudit.kernel_event("kernel_refused",
                                         request.user_id if request else "unknown",
                                         detail=f"{type(exc).__name__}: {exc}"[:500])

    async def _ready(self) -> Backend:
        """The started backend. A start that failed in the sandbox machinery (the zygote did not
        answer in time: many kernels starting at once on a loaded machine) even after
        ``_boot_sandbox``'s attempts is tried again, once per request, instead of failing every
        cell for the kernel's life; a refusal (policy, a host without the mechanisms) is
        final."""
        retried = False
        while True:
            boot = self._boot
            if boot is not None:
                await asyncio.shield(boot)
            if self._boot is not boot:  # another request started it again meanwhile
                continue
            error = self._boot_error
            if error is None:
                assert self.backend is not None
                return self.backend
            if retried or not startup_may_succeed_later(error):
                raise error
            retried = True
            assert self._loop is not None
            self._boot = self._loop.create_task(self._boot_sandbox(attempts=1))

    async def _discard_sandbox(self) -> None:
        """What a failed start left (a zygote still starting is stopped with its manager)."""
        backend, manager, self.backend, self.manager = self.backend, self.manager, None, None
        for closing in (backend, manager):
            if closing is not None:
                with contextlib.suppress(Exception):
                    await closing.close()

    @property
    def kernel_info(self) -> dict[str, Any]:
        """ipykernel's fields without its feature probe: that imports ipykernel.debugger and
        with it debugpy (~150 ms holding the GIL, ~8 MB) into a parent whose debugger runs in
        the sandbox. ``debugger`` when the session's sandbox can hold it: as its context and the
        host predict before the sandbox runs, as the running worker reports after."""
        backend = self.backend
        debugger = (isinstance(backend, SessionBackend) and self._boot_error is None
                    and backend.debugger_unavailable() is None)
        return {"protocol_version": kernel_protocol_version, "implementation": self.implementation,
                "implementation_version": self.implementation_version,
                "language_info": self.language_info, "banner": self.banner,
                "help_links": self.help_links,
                "supported_features": ["debugger"] if debugger else []}

    async def kernel_info_request(self, stream: Any, ident: Any, parent: Any) -> None:
        """As ipykernel's, once the kernel's context is decided (at most ``KERNEL_INFO_WAIT``;
        milliseconds, not the sandbox's start): JupyterLab reads ``supported_features`` once,
        from the first reply."""
        if not self._decided.is_set() and self.enable_debugger:
            with contextlib.suppress(Exception):
                await self._on_main(asyncio.wait_for(self._decided.wait(), KERNEL_INFO_WAIT))
        await super().kernel_info_request(stream, ident, parent)

    async def _on_main(self, coro: Any) -> Any:
        """Await ``coro`` on the kernel's main loop (control requests run on their own)."""
        loop = self._loop
        if loop is not None and loop.is_running() and asyncio.get_running_loop() is not loop:
            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))
        return await coro

    # -- concurrency: parent-only requests never wait for a running cell -------------------------
    async def shell_main(self, subshell_id: str | None, msg: Any) -> None:
        lock = self._main_asyncio_lock
        if lock.locked() and self.session is not None:
            try:
                _, frames = self.session.feed_identities(msg, copy=False)
                msg_type = self.session.deserialize(frames, content=False,
                                                    copy=False)["header"]["msg_type"]
            except Exception:
                msg_type = ""
            if msg_type in PARENT_ONLY or msg_type in COMM_MESSAGES:
                parent = self.get_parent("shell")
                ident = self._get_shell_context_var(self._shell_parent_ident)
                try:
                    await asyncio.create_task(
                        self.dispatch_shell(msg, subshell_id=subshell_id, concurrent=True),
                        context=copy_context())
                finally:
                    self.set_parent(ident, parent, channel="shell")
                return
        async with lock:
            await self.dispatch_shell(msg, subshell_id=subshell_id)

    def _abort_queues(self, subshell_id: str | None = None) -> None:
        """After an error, abort the execute requests already queued (stop_on_error), and only
        those: the "stop aborting" marker goes through the same path as the queued messages, as
        ipykernel does with its shell-channel thread (which this kernel does not run)."""
        self._aborting = True
        stream = self.shell_stream
        if stream is None or stream._recv_callback is None:
            self._aborting = False
            return
        stream.flush(zmq.POLLIN)  # not POLLOUT: the reply must not go out before the marker
        stream._run_callback(stream._recv_callback, [zmq.Frame(b"stop aborting")])

    def pre_handler_hook(self) -> None:
        """SIGINT stays with the event loop's handler (it interrupts the cell, not the kernel)."""

    def post_handler_hook(self) -> None:
        pass

    # -- publishing ------------------------------------------------------------------------------
    def _relay(self, parent: dict[str, Any], ident: Any = None) -> Relay:
        def publish(msg_type: str, content: dict[str, Any], buffers: list[bytes] | None,
                    metadata: dict[str, Any] | None = None) -> None:
            assert self.session is not None
            self.session.send(self.iopub_socket, msg_type, content, parent=parent,
                              ident=self._topic(msg_type), buffers=buffers, metadata=metadata)

        def on_input(prompt: str, password: bool) -> None:
            if not self.stdin_server.reserve():
                return  # at most one outstanding input_request: a second one is not served
            task = asyncio.ensure_future(self._serve_input(prompt, password, parent, ident))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return Relay(publish, on_input if ident is not None else None, self.comms.track,
                     self.cell.started, blocked=self.comms.is_parent, policy=self.output_policy,
                     model_of=self.comms.model_of, on_debug=self.debug.from_worker)

    def publish_update(self, display_id: str, data: dict[str, Any]) -> None:
        """Refresh a display the parent made (the text panel's updates)."""
        assert self.session is not None
        self.session.send(self.iopub_socket, "update_display_data",
                          {"data": data, "metadata": {}, "transient": {"display_id": display_id}},
                          parent=self.get_parent("shell"), ident=self._topic("update_display_data"))

    def _publish_comm(self, msg_type: str, content: dict[str, Any], metadata: dict[str, Any],
                      buffers: list[bytes] | None) -> None:
        """IOPub for the parent's own comms (the panel's widgets)."""
        assert self.session is not None
        self.session.send(self.iopub_socket, msg_type, content, parent=self.get_parent("shell"),
                          ident=f"comm-{content.get('comm_id', '')}".encode(), buffers=buffers,
                          metadata=metadata)

    def _make_panel(self) -> Any:
        """The security panel, on the parent's own comms (created by ``%secure_panel``)."""
        assert self.manager is not None and self.backend is not None
        self.comms.serve_parent(self._publish_comm)
        return make_panel(self.backend.context, self.backend.enforcement(),
                          recent=lambda: list(self.recent_cells),
                          audit=functools.partial(audit_view.query, self.manager.audit),
                          title=f"kernel {self.kernel_id[:8]}",
                          note=lambda: undo_line(self.backend))

    # -- execution -------------------------------------------------------------------------------
    async def do_execute(self, code: str, silent: bool, store_history: bool = True,
                         user_expressions: dict[str, Any] | None = None,
                         allow_stdin: bool = False, *, cell_meta: Any = None,
                         cell_id: str | None = None) -> dict[str, Any]:
        parent = self.get_parent("shell")
        ident = self._get_shell_context_var(self._shell_parent_ident) if allow_stdin else None
        count = self.execution_count
        if store_history and not silent:
            self.history.add(count, code)
        relay = self._relay(parent, ident)
        self.cell.waiting()
        try:
            backend = await self._ready()
        except Exception as exc:
            self.cell.idle()
            return self._refused(relay, exc, code, count, cell_id)
        extra = {"kind": "execute", "silent": silent, "store_history": store_history,
                 "user_expressions": user_expressions or {}, "allow_stdin": allow_stdin,
                 "execution_count": count, "cell_id": cell_id,
                 "parent_header": fidelity.plain_header(parent)}
        try:
            if audit_view.requested(code) is not None:
                self.cell.idle()
                return self._audit_trail(relay, backend, code, count, cell_id)
            call = magic_detect.detect(code)
            if call is not None:
                return await self.magics.run(call, relay, backend, code, count, cell_id, extra)
            return await self.run_in_session(relay, backend, code, code, extra, count, cell_id)
        except Exception as exc:  # the parent always answers, whatever happened
            return self.internal_failure(relay, backend, code, exc, count, cell_id)
        finally:
            relay.close()
            self.cell.idle()
            self.panels.idle()

    async def run_in_session(self, relay: Relay, backend: Backend, code: str, run_code: str,
                             extra: dict[str, Any], count: int, cell_id: str | None, *,
                             ctx: SecurityContext | None = None,
                             fields: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run ``run_code`` in the session and audit it as the cell ``code``. ``ctx`` is a
        tightened context for this cell only (``%%secure``); ``fields`` go into its records."""
        kernel_ctx = backend.context
        ctx = ctx or kernel_ctx
        limits = None if ctx is kernel_ctx else ctx.resource_limits
        fields = fields or {}
        assert self.kaudit is not None
        started = time.perf_counter()
        self.cell.session_run()
        monitor = self.panels.start(f"cell [{count}]", ctx.resource_limits, lambda: backend.pid)
        try:
            result = await backend.run(run_code, extra, relay.output, relay.event, limits=limits)
        except ResourceLimitExceeded as exc:
            return self.limit_failure(relay, backend, ctx, code, exc, started, count, cell_id,
                                      fields)
        except (SecurityException, OSError) as exc:
            return self.security_failure(relay, backend, ctx, code, exc, started, count,
                                         cell_id, fields)
        finally:
            self.panels.stop(monitor)
            self.cell.session_done()
            refusals = getattr(backend, "network_refusals", list)()
            for reason in refusals:  # libraries (pip) often keep the proxy's reason to themselves
                relay.output(Output("stderr", f"[network] {reason}\n"))
            relay.flush()
        values = result.reply
        room = ctx.resource_limits.max_output_bytes - (result.usage.output_bytes
                                                       if result.usage else 0)
        reply_fields = relay.reply_fields(values, room)
        fields = {**fields, **relay.audit_fields()}
        if not result.success:  # killed: os._exit, a crash, an interrupt that was not honoured
            error = result.error
            ename, evalue = (error.ename, error.evalue) if error else ("WorkerExited", "")
            outcome = "interrupted" if ename == "KeyboardInterrupt" else "crashed"
            self.kaudit.cell(ctx, code, outcome=outcome, started=started,
                             usage=result.usage, execution_count=count,
                             cell_id=cell_id, detail=f"{ename}: {evalue}"[:500], **fields)
            note = LOST_STATE if backend.lost_state else ""
            return error_reply(relay, ename, evalue + note, count)
        status = "ok" if values.get("status") == "ok" else "error"
        denial = values.get("denial") if isinstance(values.get("denial"), dict) else None
        digest = self.kaudit.cell(ctx, code, outcome=status, started=started,
                                  usage=result.usage, execution_count=count,
                                  cell_id=cell_id, truncated=result.truncated,
                                  error=(f"{values.get('ename')}: {values.get('evalue')}"[:500]
                                         if status == "error" else None), **fields)
        if denial is not None:
            self.kaudit.violation(ctx, ctx.user_id, str(denial.get("limit", "os_operation")),
                                  code_sha256=digest, detail=str(denial.get("detail", ""))[:300],
                                  reported_by="worker")
        reply: dict[str, Any] = {"status": status, "execution_count": count, **reply_fields}
        if status == "error":
            reply.update(ename=str(values.get("ename", "Error")),
                         evalue=str(values.get("evalue", "")),
                         traceback=list(values.get("traceback") or []))
        if fidelity.asks_exit(reply["payload"]):
            self._exit_soon()
        return reply

    def limit_failure(self, relay: Relay, backend: Backend | None, ctx: SecurityContext,
                      code: str, exc: ResourceLimitExceeded, started: float, count: int,
                      cell_id: str | None, fields: dict[str, Any]) -> dict[str, Any]:
        """A cell stopped for a limit: its records, and the error output naming the limit."""
        assert self.kaudit is not None
        message = str(exc) + (LOST_STATE if backend is not None and backend.lost_state else "")
        digest = self.kaudit.cell(ctx, code, outcome="limit_exceeded", started=started,
                                  usage=exc.usage, execution_count=count,
                                  cell_id=cell_id, limit=exc.limit,
                                  rolled_back=exc.rolled_back,
                                  **{**fields, **relay.audit_fields()})
        self.kaudit.violation(ctx, ctx.user_id, exc.limit, value=to_safe(exc.value),
                              allowed=to_safe(exc.allowed), code_sha256=digest,
                              rolled_back=exc.rolled_back)
        return error_reply(relay, type(exc).__name__, message, count)

    def security_failure(self, relay: Relay, backend: Backend | None, ctx: SecurityContext,
                         code: str, exc: BaseException, started: float, count: int,
                         cell_id: str | None, fields: dict[str, Any]) -> dict[str, Any]:
        """A cell refused by the code policy, or a failure of the sandbox machinery."""
        assert self.kaudit is not None
        outcome = "sandbox_error" if isinstance(exc, SandboxError | OSError) else "denied"
        digest = self.kaudit.cell(ctx, code, outcome=outcome, started=started, usage=None,
                                  execution_count=count, cell_id=cell_id,
                                  detail=f"{type(exc).__name__}: {exc}"[:500],
                                  **{**fields, **relay.audit_fields()})
        if outcome == "denied":
            self.kaudit.violation(ctx, ctx.user_id, "code_policy", code_sha256=digest,
                                  detail=str(exc)[:500])
        elif isinstance(exc, ChannelAbuse):
            self.kaudit.violation(ctx, ctx.user_id, "worker_protocol", code_sha256=digest,
                                  detail=str(exc)[:500])
        note = LOST_STATE if backend is not None and backend.lost_state else ""
        return error_reply(relay, type(exc).__name__, f"{exc}{note}", count)

    def internal_failure(self, relay: Relay, backend: Backend, code: str, exc: Exception,
                         count: int, cell_id: str | None) -> dict[str, Any]:
        """Anything unexpected while running a cell: the run was stopped (the supervisor kills
        a run it cannot finish), the cell gets an error and its record."""
        self.log.exception("AgentiCraft Secure could not finish a cell")
        evalue = (f"the kernel could not finish this cell ({type(exc).__name__}); its run was "
                  "stopped.")
        with contextlib.suppress(Exception):
            assert self.kaudit is not None
            self.kaudit.cell(backend.context, code, outcome="kernel_error",
                             started=time.perf_counter(), usage=None, execution_count=count,
                             cell_id=cell_id, detail=f"{type(exc).__name__}: {exc}"[:500],
                             **relay.audit_fields())
        return error_reply(relay, "KernelError", evalue, count)

    def _audit_trail(self, relay: Relay, backend: Backend, code: str, count: int,
                     cell_id: str | None) -> dict[str, Any]:
        """``%audit_trail [N]``, answered by the parent (see ``audit_view``)."""
        assert self.manager is not None and self.kaudit is not None
        started = time.perf_counter()
        n = audit_view.requested(code) or 0
        records = audit_view.kernel_records(self.manager.audit, self.kernel_id, n)
        relay.publish("display_data", {"data": audit_view.render(
            records, self.manager.audit.path), "metadata": {}, "transient": {}}, None)
        self.kaudit.cell(backend.context, code, outcome="ok", started=started, usage={},
                         execution_count=count, cell_id=cell_id, served_by="kernel")
        return {"status": "ok", "execution_count": count, "user_expressions": {},
                "payload": []}

    def _refused(self, relay: Relay, exc: BaseException, code: str, count: int,
                 cell_id: str | None) -> dict[str, Any]:
        """The kernel's context was refused (or misconfigured): every cell says why."""
        if self.kaudit is not None:
            self.kaudit.violation(None, self.user_id or current_user(), "authorization", code=code,
                                  detail=f"{type(exc).__name__}: {exc}"[:500],
                                  execution_count=count, cell_id=cell_id)
        return error_reply(relay, type(exc).__name__, str(exc), count)

    # -- interrupt, stdin ------------------------------------------------------------------------
    def interrupt_cell(self) -> None:
        """SIGINT (interrupt_mode "signal") or interrupt_request: KeyboardInterrupt in the cell;
        the session kills and rolls back the run if it does not stop within the grace period."""
        self.cell.interrupt()

    def _interrupt_session(self) -> None:
        if self.backend is not None:
            self.backend.interrupt()

    async def interrupt_request(self, stream: Any, ident: Any, parent: Any) -> None:
        assert self._loop is not None and self.session is not None
        self._loop.call_soon_threadsafe(self.interrupt_cell)
        self.session.send(stream, "interrupt_reply", {"status": "ok"}, parent, ident=ident)

    async def _serve_input(self, prompt: str, password: bool, parent: dict[str, Any],
                           ident: Any) -> None:
        assert self.session is not None
        value = await self.stdin_server.ask(self.session, self.stdin_socket, prompt[:4096],
                                            password, parent, ident, self.cell.input_cancel)
        if value is not None and self.backend is not None:
            with contextlib.suppress(SandboxError, OSError):
                self.backend.send({"op": "input_reply", "value": value})

    # -- introspection (in the worker, not audited as executions) --------------------------------
    async def ask_worker(self, kind: str, code: str, default: dict[str, Any],
                         relay: Relay | None = None, **extra: Any) -> dict[str, Any]:
        """One request to the worker that is not a cell (completion, comms, variables)."""
        try:
            backend = await self._ready()
            result = await backend.run(code, {"kind": kind, **extra},
                                      relay.output if relay else None,
                                      relay.event if relay else None)
        except Exception as exc:
            self.log.warning("%s request failed in the sandbox: %s", kind, exc)
            return default
        finally:
            if relay is not None:
                relay.flush()
        values = result.reply
        if result.success and values.get("status") == "ok":
            return values
        self.log.warning("%s request failed in the sandbox: %s", kind, result.error)
        return default

    async def do_complete(self, code: str, cursor_pos: int | None) -> dict[str, Any]:
        cursor = len(code) if cursor_pos is None else cursor_pos
        default = {"status": "ok", "matches": [], "cursor_start": cursor, "cursor_end": cursor,
                   "metadata": {}}
        return await self.ask_worker("complete", code, default, cursor_pos=cursor)

    async def do_inspect(self, code: str, cursor_pos: int, detail_level: int = 0,
                         omit_sections: Any = ()) -> dict[str, Any]:
        default = {"status": "ok", "data": {}, "metadata": {}, "found": False}
        return await self.ask_worker("inspect", code, default, cursor_pos=cursor_pos,
                                      detail_level=detail_level,
                                      omit_sections=sorted(omit_sections or ()))

    async def do_is_complete(self, code: str) -> dict[str, Any]:
        from IPython.core.inputtransformer2 import TransformerManager
        status, indent = TransformerManager().check_complete(code)
        reply: dict[str, Any] = {"status": status}
        if status == "incomplete":
            reply["indent"] = " " * (indent or 0)
        return reply

    async def do_history(self, hist_access_type: str, output: bool, raw: bool,
                         session: int | None = None, start: int | None = None,
                         stop: int | None = None, n: int | None = None,
                         pattern: str | None = None, unique: bool = False) -> dict[str, Any]:
        return self.history.reply(hist_access_type, output, raw, session=session, start=start,
                                  stop=stop, n=n, pattern=pattern, unique=unique)

    # -- comms: the frontend's side of widgets ----------------------------------------------------
    async def _comm(self, stream: Any, ident: Any, parent: dict[str, Any]) -> None:
        msg_type = parent["header"]["msg_type"]
        content = dict(parent.get("content") or {})
        if self.comms.is_parent(str(content.get("comm_id", ""))):
            try:  # the panel's widgets: answered here, never relayed
                self.comms.handle_parent(msg_type, parent)
            except Exception:
                self.log.exception("the security panel could not handle %s", msg_type)
            return
        self.comms.track(msg_type, content)
        msg = {"msg_type": msg_type, "content": content, "metadata": parent.get("metadata", {}),
               "header": {"msg_id": parent["header"].get("msg_id"), "msg_type": msg_type},
               "buffers": [base64.b64encode(bytes(b)).decode("ascii")
                           for b in parent.get("buffers") or []]}
        await self.ask_worker("comm", "", {}, self._relay(parent), msg=msg,
                              parent_header=fidelity.plain_header(parent))

    comm_open = comm_msg = comm_close = _comm

    async def comm_info_request(self, stream: Any, ident: Any, parent: Any) -> None:
        target = (parent.get("content") or {}).get("target_name")
        assert self.session is not None
        self.session.send(stream, "comm_info_reply",
                          {"status": "ok", "comms": self.comms.listing(target)}, parent, ident)

    # -- the debugger (JupyterLab's; it runs in the sandbox, see parent/debug.py) ----------------
    async def debug_request(self, stream: Any, ident: Any, parent: Any) -> None:
        self._debug_parent = parent
        await super().debug_request(stream, ident, parent)

    async def do_debug_request(self, msg: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(msg, dict):
            return failed({}, "not a DAP request")
        self._audit_debug(msg)
        return await self._on_main(self.debug.request(msg))

    def _audit_debug(self, msg: dict[str, Any]) -> None:
        """The debugger's requests that run code in the sandbox (the debug console's
        expressions, a changed variable, a breakpoint's condition or log message) are
        recorded, as cells are: they are not cells."""
        code = code_of(msg)
        if code is None or self.kaudit is None:
            return
        user = self.backend.context.user_id if self.backend is not None else \
            self.user_id or current_user()
        self.kaudit.kernel_event("debug_code", user, command=str(msg["command"]),
                                 code=code[:2000])

    async def _debug_run(self, dap: dict[str, Any] | None) -> dict[str, Any]:
        try:
            backend = await self._ready()
        except Exception as exc:
            return failed(dap or {}, f"the sandbox is not running ({type(exc).__name__})")
        if not isinstance(backend, SessionBackend):
            return failed(dap or {}, "a restricted kernel has no debugger")
        reason = backend.debugger_unavailable()
        if reason is not None:
            return failed(dap or {}, f"no debugger here: {reason}")
        relay = self._relay(self._debug_parent)
        try:
            result = await backend.debug(dap, relay.event)
        except Exception as exc:
            self.log.warning("debug request failed in the sandbox: %s", exc)
            return failed(dap or {}, f"the sandbox failed ({type(exc).__name__}: {exc})")
        finally:
            relay.close()
        reply = result.reply.get("reply") if result.success else None
        if isinstance(reply, dict) or dap is None:
            return reply or {}
        self.log.warning("debug request failed in the sandbox: %s %s", result.error, result.reply)
        return failed(dap, "the sandbox gave no reply" + (
            f" ({result.error.ename}: {result.error.evalue})" if result.error else ""))

    def _debug_send(self, frame: dict[str, Any]) -> None:
        if self.backend is None:
            raise SandboxError("the sandbox session is not running")
        self.backend.send(frame)

    def _debug_running(self) -> bool:
        """A cell (or another debug request) runs in a worker that holds the debugger."""
        backend = self.backend
        return isinstance(backend, SessionBackend) and backend.running and backend.debugging

    def _publish_debug(self, content: dict[str, Any]) -> None:
        assert self.session is not None
        self.session.send(self.iopub_socket, "debug_event", content, parent=self._debug_parent,
                          ident=self._topic("debug_event"))

    # -- usage (jupyter-resource-usage), exit() --------------------------------------------------
    async def usage_request(self, stream: Any, ident: Any, parent: Any) -> None:
        """What ipykernel answers, measured on the sandbox's worker tree (where cells run)."""
        assert self.session is not None
        pid = self.backend.pid if self.backend is not None else None
        self.session.send(stream, "usage_reply", self._usage.reply(pid), parent, ident)

    def _exit_soon(self) -> None:
        """``exit()`` in a cell: as ipykernel, stop shortly after the reply went out."""
        async def stop() -> None:
            await self._close()
            self.io_loop.stop()

        def later() -> None:
            task = asyncio.ensure_future(stop())
            self._tasks.add(task)

        assert self._loop is not None
        self._loop.call_later(fidelity.EXIT_DELAY, later)

    # -- shutdown --------------------------------------------------------------------------------
    async def do_shutdown(self, restart: bool) -> dict[str, Any]:
        """Close the session (a restart starts a new kernel process, hence a fresh session)."""
        loop = self._loop
        if loop is not None and loop.is_running() and asyncio.get_running_loop() is not loop:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._close(), loop))
        else:
            await self._close()
        return {"status": "ok", "restart": restart}

    async def _close(self) -> None:
        self.interrupt_cell()
        if self._boot is not None and not self._boot.done():
            self._boot.cancel()
            with contextlib.suppress(BaseException):
                await self._boot
        if self.backend is not None:
            with contextlib.suppress(Exception):
                await self.backend.close()
            if self.kaudit is not None:
                self.kaudit.kernel_event("kernel_shutdown", self.backend.context.user_id)
            self.backend = None
        if self.manager is not None:
            with contextlib.suppress(Exception):
                await self.manager.close()
            self.manager = None
