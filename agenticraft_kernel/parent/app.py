"""Launch the secure kernel: ``python -P -m agenticraft_kernel.parent.app -f {connection_file}``.

ipykernel's ``IPKernelApp`` with four changes: the kernel class is ``SecureKernel``; there is no
shell-channel thread (this kernel does not offer subshells); the working directory is never
put on ``sys.path`` (``-P`` and ``init_path``), because a cell may be allowed to write files there
and the parent kernel runs unconfined: nothing a cell writes may be imported by the parent; and
the parent's own stdout/stderr are not IOPub streams (``outstream_class``).
"""

from __future__ import annotations

import sys
from typing import Any

import zmq
from ipykernel.control import ControlThread
from ipykernel.iostream import IOPubThread
from ipykernel.kernelapp import IPKernelApp
from jupyter_client.session import Session
from traitlets import Bool, DottedObjectName, Type

from agenticraft_kernel.parent.kernel import SecureKernel


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
