"""Worker side: ``IPythonExecutor``, the process sandbox executor behind the secure kernel.

The process sandbox loads it by name
(``agenticraft_kernel.worker.ipython_executor:IPythonExecutor``)
inside the confined session worker. Every request the kernel makes (a cell, a completion, an
inspection, a comm message from the frontend) is one ``run`` whose ``request["kind"]`` says
which; the returned dict is the reply content. It runs on the untrusted side: it can report,
never decide.
"""

from __future__ import annotations

import base64
import errno
import os
import sys
from typing import Any

from agenticraft.jail.explain import HIDDEN_HINT, file_refusal, hidden_path
from agenticraft_kernel.worker.channel import Channel, EventStream

#: errno values that mean "the sandbox said no" when an operating-system call fails in a cell.
DENIAL_ERRNOS = {errno.EPERM, errno.EACCES, errno.EROFS, errno.ENETUNREACH,
                 errno.EAFNOSUPPORT, errno.EHOSTUNREACH}


class IPythonExecutor:
    """One IPython shell per session worker; see the module docstring."""

    def __init__(self) -> None:
        self.worker: Any = None
        self.channel: Channel | None = None
        self.kernel: Any = None
        self.shell: Any = None
        self.debugger: Any = None  # the JupyterLab debugger (see ``_debug``)
        self._listening = False  # a thread reads the channel: this process runs its runs

    def attach(self, worker: Any) -> None:
        self.worker = worker

    # -- entry point -----------------------------------------------------------------------------
    def run(self, code: str, request: dict[str, Any]) -> dict[str, Any]:
        if self.shell is None:
            self._start_shell()
        assert self.channel is not None
        kind = request.get("kind", "execute")
        handler = getattr(self, f"_{kind}", None)
        if handler is None:
            return {"status": "error", "ename": "ValueError", "evalue": f"unknown kind {kind!r}",
                    "traceback": []}
        header = request.get("parent_header")
        if isinstance(header, dict):  # the frontend's request: Output widgets capture by its id
            self.kernel.set_parent([], {"header": header, "parent_header": {}, "metadata": {},
                                        "content": {}, "msg_id": header.get("msg_id"),
                                        "msg_type": header.get("msg_type")}, "shell")
        self.channel.begin()
        try:
            return handler(code, request)
        finally:
            self.channel.end()

    def format_exception(self, exc: BaseException) -> dict[str, str]:
        from agenticraft.jail.executors import format_exception
        return format_exception(exc)

    # -- set-up ----------------------------------------------------------------------------------
    def _start_shell(self) -> None:
        from traitlets.config import Config

        from agenticraft_kernel.worker.shell import make_kernel
        os.environ.setdefault("IPYTHONDIR", os.path.join(os.environ.get("HOME", "."), ".ipython"))
        # As IPKernelApp does: matplotlib draws inline unless the user chose another backend.
        os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
        from agenticraft_kernel.worker.fontconfig import ensure_fontconfig
        ensure_fontconfig()
        self.channel = Channel(self.worker)
        config = Config()
        config.HistoryManager.hist_file = ":memory:"
        sys.stdout = EventStream(self.channel, "stdout")
        sys.stderr = EventStream(self.channel, "stderr")
        self.kernel = make_kernel(self.channel, config, self._ask)
        self.shell = self.kernel.shell
        from agenticraft_kernel.worker.magics import KernelAnsweredMagics
        self.shell.register_magics(KernelAnsweredMagics)
        self.comm_manager = self.kernel.comm_manager
        _stable_cell_files()

    # -- kinds -----------------------------------------------------------------------------------
    def _execute(self, code: str, request: dict[str, Any]) -> dict[str, Any]:
        shell = self.shell
        silent = bool(request.get("silent", False))
        store_history = bool(request.get("store_history", not silent))
        if isinstance(request.get("execution_count"), int) and store_history:
            shell.execution_count = request["execution_count"]
        shell._last_traceback = None
        shell.limit_error = None
        shell.limits = dict(request.get("limits") or {})
        # From here a KeyboardInterrupt is the cell's: the kernel holds interrupts until now.
        self.channel.emit({"type": "cell_started"})
        self.kernel._forward_input(bool(request.get("allow_stdin", False)))
        try:
            result = shell.run_cell(code, store_history=store_history, silent=silent,
                                    cell_id=request.get("cell_id"))
        finally:
            self.kernel._restore_input()
        shell.exit_now = False  # exit() is the ask_exit payload: the parent acts on it
        if shell.limit_error is not None:  # the worker reports it; the session rolls back
            raise limit_exceeded(shell.limit_error, request.get("limits") or {})
        error = result.error_before_exec or result.error_in_exec
        reply: dict[str, Any] = {"execution_count": shell.execution_count - 1}
        if result.success:
            reply["status"] = "ok"
            reply["user_expressions"] = shell.user_expressions(
                request.get("user_expressions") or {})
        else:
            denial = classify_denial(error)
            evalue = str(error)
            why = file_refusal(error, request.get("limits") or {})
            if why:
                evalue += f" ({why})"
            reply.update(status="error", ename=type(error).__name__, evalue=evalue,
                         traceback=shell._last_traceback or [], user_expressions={})
            network_allowed = bool((request.get("limits") or {}).get("network_access"))
            if denial and not (denial["limit"] == "network_access" and network_allowed):
                reply["denial"] = denial
        reply["payload"] = shell.payload_manager.read_payload()
        shell.payload_manager.clear_payload()
        return reply

    def _complete(self, code: str, request: dict[str, Any]) -> dict[str, Any]:
        from IPython.core.completer import provisionalcompleter, rectify_completions
        cursor = request.get("cursor_pos")
        cursor = len(code) if cursor is None else int(cursor)
        completer = self.shell.Completer
        try:
            with provisionalcompleter():
                completions = list(rectify_completions(code, completer.completions(code, cursor)))
        except Exception:
            completions = []
        if not completions and completer.use_jedi:
            # IPython swallows jedi's own failures and then returns nothing (seen on a first,
            # cold run inside the sandbox): ask IPython's own matchers instead.
            use_jedi, completer.use_jedi = completer.use_jedi, False
            try:
                with provisionalcompleter():
                    completions = list(rectify_completions(
                        code, completer.completions(code, cursor)))
            finally:
                completer.use_jedi = use_jedi
        meta = [{"start": c.start, "end": c.end, "text": c.text, "type": c.type,
                 "signature": c.signature} for c in completions]
        start, end = (completions[0].start, completions[0].end) if completions else (cursor,
                                                                                      cursor)
        return {"matches": [c.text for c in completions], "cursor_start": start,
                "cursor_end": end, "metadata": {"_jupyter_types_experimental": meta},
                "status": "ok"}

    def _inspect(self, code: str, request: dict[str, Any]) -> dict[str, Any]:
        from IPython.utils.tokenutil import token_at_cursor
        cursor = request.get("cursor_pos")
        name = token_at_cursor(code, len(code) if cursor is None else int(cursor))
        reply: dict[str, Any] = {"status": "ok", "data": {}, "metadata": {}, "found": False}
        try:
            bundle = self.shell.object_inspect_mime(
                name, detail_level=int(request.get("detail_level", 0)),
                omit_sections=tuple(request.get("omit_sections") or ()))
        except KeyError:
            return reply
        if not self.shell.enable_html_pager:
            bundle.pop("text/html", None)
        reply.update(data=bundle, found=True)
        return reply

    def _comm(self, code: str, request: dict[str, Any]) -> dict[str, Any]:
        """A comm message from the frontend (a widget moved, a comm opened or closed)."""
        msg = dict(request.get("msg") or {})
        msg["buffers"] = [base64.b64decode(b) for b in msg.get("buffers") or []]
        handler = getattr(self.comm_manager, str(msg.get("msg_type")), None)
        if msg.get("msg_type") not in ("comm_open", "comm_msg", "comm_close") or handler is None:
            return {"status": "error"}
        handler(None, None, msg)
        return {"status": "ok"}

    def _get_vars(self, code: str, request: dict[str, Any]) -> dict[str, Any]:
        """``%%secure --in``: named variables of the session, if they are plain data (the kernel
        checks them again: this side is untrusted)."""
        from agenticraft.wire.transfer import TransferError, literal
        values: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for name in request.get("names") or []:
            if name not in self.shell.user_ns:
                errors[name] = f"--in {name}: no variable named {name!r} in this notebook"
                continue
            try:
                literal(self.shell.user_ns[name], name)
            except TransferError as exc:
                errors[name] = str(exc)
                continue
            values[name] = self.shell.user_ns[name]
        return {"status": "ok", "values": values, "errors": errors}

    def _set_vars(self, code: str, request: dict[str, Any]) -> dict[str, Any]:
        """``%%secure --out``: results of a fresh sandbox become session variables."""
        values = request.get("values") or {}
        self.shell.user_ns.update({str(k): v for k, v in values.items()})
        return {"status": "ok"}

    def _comm_info(self, code: str, request: dict[str, Any]) -> dict[str, Any]:
        target = request.get("target_name")
        return {"status": "ok", "comms": {
            cid: {"target_name": c.target_name}
            for cid, c in self.comm_manager.comms.items()
            if target is None or c.target_name == target}}

    def _debug(self, code: str, request: dict[str, Any]) -> dict[str, Any]:
        """One DAP request between cells (see ``worker.debugger``). ``initialize`` starts
        debugpy; from then on a thread reads the channel, so that requests reach the debugger
        while a cell is held at a breakpoint, and this process runs every later run itself
        (``listening`` tells the session so). Before that only ``debugInfo`` is answered (what
        JupyterLab asks every kernel it opens): nothing is started or imported for it."""
        dap = request.get("request")
        if not isinstance(dap, dict):  # only delivers replies kept since the last run
            return {"status": "ok", "reply": None, "listening": self._listening}
        if self.debugger is None and dap.get("command") != "initialize":
            from agenticraft_kernel.worker.debugger import idle_reply
            return {"status": "ok", "reply": idle_reply(dap), "listening": False}
        if self.debugger is None:
            from agenticraft_kernel.worker.debugger import SandboxDebugger
            assert self.channel is not None
            try:
                self.debugger = SandboxDebugger(self.channel.emit)
            except Exception as exc:
                return {"status": "ok", "listening": False, "reply": {
                    "type": "response", "request_seq": dap.get("seq", 0), "success": False,
                    "command": dap.get("command", ""),
                    "message": f"the debugger cannot start in this sandbox: {exc}"}}
            self.worker.listen(self.debugger.control)
            self._listening = True
        return {"status": "ok", "reply": self.debugger.request(dap), "listening": True}

    # -- stdin -----------------------------------------------------------------------------------
    def _ask(self, prompt: str, password: bool) -> str:
        """ipykernel's ``_input_request``: the parent asks the frontend on the stdin channel."""
        assert self.channel is not None
        self.channel.emit({"type": "input_request", "prompt": prompt, "password": password})
        while True:
            msg = self.worker.receive()
            if msg is None:
                raise EOFError("the kernel closed the session")
            if msg.get("op") == "input_reply":
                break
        value = str(msg.get("value", ""))
        if value == "\x04":
            raise EOFError
        return value


def _stable_cell_files() -> None:
    """Cells compile to ``<tmp>/ipykernel_<pid>/<hash>.py`` (ipykernel's ``XCachingCompiler``),
    the names the debugger's breakpoints use. Each cell runs in a process forked for it, so the
    pid is fixed once, here: a function defined by an earlier cell keeps the file name that a
    breakpoint set in that cell's source names."""
    from ipykernel import compiler
    directory = compiler.get_tmp_directory()
    compiler.get_tmp_directory = lambda: directory


def limit_exceeded(exc: BaseException, limits: dict[str, Any]) -> BaseException:
    """A raw error that is really a limit (see ``jail.limit_errors``) as that limit."""
    from agenticraft.jail.limit_errors import limit_info
    from agenticraft.wire.errors import ResourceLimitExceeded
    info = limit_info(exc, limits) or {"limit": "memory_mb", "allowed": limits.get("memory_mb")}
    error = ResourceLimitExceeded(info["limit"], info.get("value"), info["allowed"])
    error.detail = info.get("detail")  # type: ignore[attr-defined]
    return error


def classify_denial(exc: BaseException | None) -> dict[str, str] | None:
    """If a cell failed because the sandbox refused an OS operation, say which kind.

    A report for the audit log, from the untrusted side (the kernel records it as such).
    """
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, FileNotFoundError) and hidden_path(exc.filename):
            return {"limit": "filesystem_access",
                    "detail": f"{type(exc).__name__}: {exc} ({HIDDEN_HINT})"[:300]}
        if isinstance(exc, OSError) and (exc.errno in DENIAL_ERRNOS
                                         or _is_resolver_error(exc)):
            kind = ("filesystem_access" if exc.filename is not None else "network_access"
                    if _from_socket(exc) else "os_operation")
            return {"limit": kind, "detail": f"{type(exc).__name__}: {exc}"[:300]}
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def _is_resolver_error(exc: OSError) -> bool:
    import socket
    return isinstance(exc, socket.gaierror)


def _from_socket(exc: BaseException) -> bool:
    import socket
    if isinstance(exc, socket.gaierror | ConnectionError):
        return True
    tb = exc.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if name.endswith(("socket.py", "connection.py", "client.py", "request.py", "ssl.py")):
            return True
        tb = tb.tb_next
    return exc.errno in (errno.ENETUNREACH, errno.EAFNOSUPPORT, errno.EHOSTUNREACH)
