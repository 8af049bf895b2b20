"""Worker side: the JupyterLab debugger, inside the sandbox.

ipykernel's own ``Debugger`` (DAP bookkeeping: dumpCell, debugInfo, breakpoints, the stopped
thread logic, rich variable inspection, copyToGlobals) runs here unchanged, on an event loop
of its own thread, against a debugpy adapter that ``debugpy.listen`` starts as a process of the
sandbox. Every socket involved (pydevd <-> adapter <-> this client) is on the loopback of the
sandbox's own network namespace: nothing of it is reachable from the host, and the parent only
ever sees DAP messages as channel events.

The kernel's requests arrive by two paths: between cells as a ``debug`` run (the executor waits
for the reply), and while a cell runs (perhaps held at a breakpoint) as ``control`` frames that
the worker's channel thread hands to :meth:`SandboxDebugger.control`; the reply then goes back
as a ``debug_reply`` event of the running cell. debugpy's events become ``debug_event`` events.

The debugger's threads live in one process: the kernel runs a debugging session's cells in the
live worker itself, not in forked runners (threads do not survive a fork).
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

#: How long a request may take inside the worker before the kernel gets a failed response.
REQUEST_TIMEOUT = 30.0
#: Modules whose frames the user never steps into (the sandbox's and the kernel's own).
INTERNAL_PACKAGES = ("agenticraft", "agenticraft_kernel", "ipykernel", "IPython", "traitlets",
                     "zmq", "tornado", "jupyter_client", "comm")


def unavailable() -> str | None:
    """Why the debugger cannot run in this worker, or None when it can."""
    if importlib.util.find_spec("debugpy") is None:
        return "debugpy is not installed in the kernel's environment"
    return None


def _internal_files() -> list[str]:
    files = []
    for name, module in sys.modules.copy().items():
        path = getattr(module, "__file__", None)
        if path and name.split(".")[0] in INTERNAL_PACKAGES:
            files.append(path)
    return files


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _listen(debugpy: Any, host: str, port: int) -> None:
    """``debugpy.listen``, starting the adapter through ``worker.debug_adapter`` (debugpy runs
    the directory of ``debugpy.adapter`` as its adapter script: pointed at ours for the call)."""
    from debugpy import adapter

    from agenticraft_kernel.worker import debug_adapter
    original = adapter.__file__
    adapter.__file__ = debug_adapter.__file__
    try:
        debugpy.listen((host, port))
    finally:
        adapter.__file__ = original


def idle_reply(request: dict[str, Any]) -> dict[str, Any]:
    """A request before ``initialize``: ipykernel's own ``debugInfo`` answer for a debugger
    that has not started (its hash and file parameters; no breakpoints, no stopped threads),
    computed without debugpy or a thread; anything else fails."""
    if request.get("command") != "debugInfo":
        return _failed(request, "the debugger is not started")
    from types import SimpleNamespace

    from ipykernel.debugger import Debugger
    idle = SimpleNamespace(breakpoint_list={}, is_started=False, stopped_threads=set())
    step = Debugger.debugInfo(idle, request)  # a coroutine that awaits nothing
    try:
        step.send(None)
    except StopIteration as done:
        return dict(done.value)
    step.close()
    return _failed(request, "debugInfo did not complete")


def _failed(request: dict[str, Any], message: str) -> dict[str, Any]:
    return {"type": "response", "request_seq": request.get("seq", 0), "success": False,
            "command": request.get("command", ""), "message": message}


class SandboxDebugger:
    """ipykernel's ``Debugger`` on its own thread and loop; see the module docstring."""

    def __init__(self, emit: Callable[..., None]) -> None:
        os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # no frozen-modules note
        self.emit = emit
        self.loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self.debugger: Any = None
        from agenticraft.jail.worker import start_sandbox_thread
        start_sandbox_thread(threading.Thread(target=self._main, name="agenticraft-debugger",
                                              daemon=True))
        self._started.wait()
        if self._error is not None:
            raise self._error


    # -- the debugger's thread -------------------------------------------------------------------
    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.debugger = self._make()
        except BaseException as exc:  # reported to the caller, in the main thread
            self._error = exc
            self._started.set()
            return
        self.loop.create_task(self._stopped_events())
        self._started.set()
        self.loop.run_forever()

    def _make(self) -> Any:
        import ipykernel.debugger as ipk_debugger
        import zmq
        from zmq.eventloop.zmqstream import ZMQStream
        if not ipk_debugger._is_debugpy_available:  # imported with debugpy hidden (shell.py)
            ipk_debugger = importlib.reload(ipk_debugger)
        if not ipk_debugger._is_debugpy_available:
            raise ImportError(unavailable() or "debugpy cannot be imported")
        from ipykernel import compiler
        ipk_debugger.get_tmp_directory = compiler.get_tmp_directory  # fixed by the executor
        import debugpy

        class Debugger(ipk_debugger.Debugger):  # type: ignore[name-defined,misc]
            def start(self) -> bool:
                """ipykernel asks its own shell to run ``debugpy.listen``; here the debugger
                is in the kernel's process already: listen on the sandbox's loopback."""
                if not self.debugpy_initialized:
                    os.makedirs(ipk_debugger.get_tmp_directory(), mode=0o700, exist_ok=True)
                    host, port = self.debugpy_client.get_host_port()
                    # The user's own processes are not debugged: no fork/exec patching.
                    debugpy.configure(subProcess=False)
                    _listen(debugpy, host, int(port))
                    self.debugpy_initialized = True
                return bool(super().start())

        socket = zmq.Context.instance().socket(zmq.STREAM)
        socket.linger = 0
        stream = ZMQStream(socket)
        debugger = Debugger(logging.getLogger("agenticraft.debugger"), stream, self._event,
                            None, None, _internal_files(), just_my_code=False)
        # ipykernel picks the adapter's port by binding a ZeroMQ socket, which asks for the
        # host's interfaces over netlink (refused here: ZeroMQ aborts). A plain socket picks it.
        debugger.debugpy_client.debugpy_port = str(_free_port(debugger.debugpy_host))
        stream.on_recv(lambda msg: debugger.tcp_client.receive_dap_frame(
            msg[1].bytes.decode("utf-8")), copy=False)
        return debugger

    async def _stopped_events(self) -> None:
        """ipykernel's ``poll_stopped_queue``: a stop of all threads becomes one event."""
        while True:
            try:
                await self.debugger.handle_stopped_event()
            except Exception:
                logging.getLogger("agenticraft.debugger").exception("stopped event")

    def _event(self, message: dict[str, Any]) -> None:
        self.emit({"type": "debug_event", "content": message})

    # -- requests, from the main thread or the channel thread ------------------------------------
    def submit(self, request: dict[str, Any]) -> Future[dict[str, Any]]:
        """Hand one DAP request to the debugger's loop."""
        return asyncio.run_coroutine_threadsafe(self.debugger.process_request(request),
                                                self.loop)

    def request(self, request: dict[str, Any]) -> dict[str, Any]:
        """A request between cells: wait for its reply (the main thread has nothing to run)."""
        try:
            return self.submit(request).result(REQUEST_TIMEOUT) or {}
        except Exception as exc:
            return _failed(request, f"{type(exc).__name__}: {exc}")

    def control(self, frame: dict[str, Any]) -> None:
        """A request while a cell runs (the channel thread): the reply becomes an event."""
        request = frame.get("request") if isinstance(frame.get("request"), dict) else {}
        ident = frame.get("id")

        def reply(future: Future[dict[str, Any]]) -> None:
            try:
                content = future.result() or {}
            except Exception as exc:
                content = _failed(request, f"{type(exc).__name__}: {exc}")
            self.emit({"type": "debug_reply", "id": ident, "content": content}, keep=True)

        if frame.get("kind") != "debug" or not request:
            return
        self.submit(request).add_done_callback(reply)
