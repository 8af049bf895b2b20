"""Launch the secure kernel: ``python -P -m agenticraft_kernel.parent.app -f {connection_file}``.

ipykernel's ``IPKernelApp`` with five changes: the kernel class is ``SecureKernel``; there is no
shell-channel thread (this kernel does not offer subshells); the working directory is never
put on ``sys.path`` (``-P`` and ``init_path``), because a cell may be allowed to write files there
and the parent kernel runs unconfined: nothing a cell writes may be imported by the parent; the
parent's own stdout/stderr are not IOPub streams (``outstream_class``); and a port the frontend
chose that is busy for a moment is retried instead of ending the kernel (``bind_patience``).
"""

from __future__ import annotations

import errno
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import zmq
from ipykernel.control import ControlThread
from ipykernel.heartbeat import Heartbeat
from ipykernel.iostream import IOPubThread
from ipykernel.kernelapp import IPKernelApp
from jupyter_client.session import Session
from traitlets import Bool, DottedObjectName, Float, Type

from agenticraft_kernel.parent.kernel import SecureKernel

T = TypeVar("T")
#: How long a busy port is retried, in seconds (see ``bind_when_free``).
BIND_PATIENCE = 30.0


def bind_when_free(bind: Callable[[], T], patience: float, on_retry: Callable[[], None],
                   ) -> T:
    """``bind()``, retried while its port is in use, for up to ``patience`` seconds.

    The frontend picked this kernel's ports (jupyter_client binds port 0 and closes) and wrote
    them in the connection file, so no other port will do. When many kernels start at once,
    something else can hold one of them for a while: another process probing for free ports,
    an outgoing connection's local port (one of a client's connections to another kernel), a
    connection in TIME_WAIT. ipykernel tries once and the kernel dies ("Address already in
    use"); retrying outlasts the short-lived holders. A port held for longer than ``patience``
    still fails, as before."""
    deadline = time.monotonic() + patience
    delay = 0.02
    while True:
        try:
            return bind()
        except zmq.ZMQError as exc:
            if exc.errno != errno.EADDRINUSE or time.monotonic() + delay > deadline:
                raise
        on_retry()
        time.sleep(delay)  # nothing to wait on: the port's holder is another process
        delay = min(delay * 2, 0.5)


class PatientHeartbeat(Heartbeat):
    """ipykernel's heartbeat thread, binding its given port with ``bind_when_free``."""

    patience = BIND_PATIENCE
    on_retry: Callable[[int], None] = staticmethod(lambda port: None)  # type: ignore[assignment]

    def _try_bind_socket(self) -> None:
        bind = super()._try_bind_socket
        if self.original_port and self.transport == "tcp":
            bind_when_free(bind, self.patience, lambda: self.on_retry(self.port))
        else:
            bind()


class SecureKernelApp(IPKernelApp):
    """The kernel process (config file: ``agenticraft_kernel_config.py`` in the IPython
    profile or system config dirs; every setting there is a request the policy clips)."""

    name = "agenticraft-kernel"
    classes = [SecureKernel, Session]  # type: ignore[assignment]
    subcommands: dict[str, Any] = {}  # type: ignore[assignment]
    kernel_class = Type(SecureKernel, klass="ipykernel.kernelbase.Kernel",
                        help="The kernel class (SecureKernel or a subclass)").tag(config=True)
    # The sandbox zygote inherits fds 1/2; its diagnostics belong in the log, not in cells.
    capture_fd_output = Bool(False, help="Forward fd-level output of the kernel process"
                             ).tag(config=True)
    # ipykernel flushes sys.stdout/stderr after every control and shell request; as IOPub
    # streams that flush waits for the IOPub thread, which a flooding cell keeps busy with
    # relayed output, so kernel_info and interrupts would queue behind the flood. The parent
    # runs no user code and prints nothing for the notebook: its own output goes to the log.
    outstream_class = DottedObjectName(None, allow_none=True, help="""Stream class for the
        parent's own stdout/stderr (None: the process's, i.e. the server log; cells' output
        comes over the sandbox channel whatever this is)""").tag(config=True)

    bind_patience = Float(BIND_PATIENCE, help="""Seconds to keep retrying a port from the
        connection file that another process holds (many kernels starting at once)""",
                          ).tag(config=True)

    def _try_bind_socket(self, s: Any, port: int) -> int:
        """ipykernel's, retrying a given TCP port while it is in use (``bind_when_free``)."""
        def bind() -> int:
            return super(SecureKernelApp, self)._try_bind_socket(s, port)

        if port <= 0 or self.transport != "tcp":
            return bind()
        return bind_when_free(bind, self.bind_patience, lambda: self._port_busy(port))

    def _port_busy(self, port: int) -> None:
        self.log.warning("port %i is in use; trying again (many kernels starting at once?)",
                         port)

    def init_heartbeat(self) -> None:
        """ipykernel's, with the patient heartbeat (its port is retried too)."""
        hb_ctx = zmq.Context()
        self.heartbeat = PatientHeartbeat(
            hb_ctx, (self.transport, self.ip, self.hb_port),
            curve_publickey=self.curve_publickey, curve_secretkey=self.curve_secretkey)
        self.heartbeat.patience = self.bind_patience
        self.heartbeat.on_retry = self._port_busy
        self.hb_port = self.heartbeat.port
        self.heartbeat.start()

    def init_control(self, context: Any) -> None:
        """ipykernel's, without connecting its debugger's shell socket (this kernel offers no
        debugger, and every outgoing connection takes an ephemeral port, see ``init_iopub``)."""
        self.control_socket = context.socket(zmq.ROUTER)
        self.control_socket.linger = 1000
        self._apply_curve_server_options(self.control_socket)
        self.control_port = self._bind_socket(self.control_socket, self.control_port)
        self.debugpy_socket = context.socket(zmq.STREAM)
        self.debug_shell_socket = context.socket(zmq.DEALER)
        if hasattr(zmq, "ROUTER_HANDOVER"):
            self.control_socket.router_handover = 1
        self.control_thread = ControlThread(daemon=True)
        self.shell_channel_thread = None  # no subshells: shell messages run on the main loop

    def init_iopub(self, context: Any) -> None:
        """ipykernel's, without the pipe for forked subprocesses' output.

        That pipe is one more TCP port bound at random while the kernel starts. jupyter_client
        picks each kernel's ports by binding to port 0 and closing, so when many kernels start at
        once, a port picked for one can be taken by another's pipe before the first binds it, and
        the first dies ("Address already in use"). The parent runs no user code: nothing forked
        from it ever writes to IOPub, so it needs no pipe (cells' output comes over the sandbox
        channel)."""
        self.iopub_socket = context.socket(zmq.XPUB)
        self.iopub_socket.linger = 1000
        self._apply_curve_server_options(self.iopub_socket)
        self.iopub_port = self._bind_socket(self.iopub_socket, self.iopub_port)
        self.configure_tornado_logger()
        self.iopub_thread = IOPubThread(self.iopub_socket, pipe=False, session=self.session)
        self.iopub_thread.start()
        self.iopub_socket = self.iopub_thread.background_socket

    def init_path(self) -> None:
        """Leave ``sys.path`` alone: never import from the notebook's directory."""


def main(argv: list[str] | None = None) -> None:
    if sys.path and sys.path[0] in ("", "."):
        del sys.path[0]
    app = SecureKernelApp.instance()
    app.initialize(argv)
    app.start()


if __name__ == "__main__":
    main()
