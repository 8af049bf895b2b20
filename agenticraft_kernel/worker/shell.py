"""Worker side: ipykernel's own kernel object and shell, wired to the sandbox channel.

User code must not be able to tell this kernel from ipykernel: ``get_ipython()`` is a
``ZMQInteractiveShell``, ``get_ipython().kernel`` an ``IPythonKernel`` with a ``session``, an
``iopub_socket`` and a ``comm_manager``, displays go through ipykernel's display publisher and
display hook, comms through ipykernel's ``Comm``/``CommManager``, ``exit()`` writes ipykernel's
``ask_exit`` payload. Only the last step differs: ``ChannelSession.send`` turns each IOPub
message into a channel event (the parent republishes it under the cell's request) instead of
writing it to a ZeroMQ socket. The kernel object serves no sockets; the parent runs the protocol.
"""

from __future__ import annotations

import base64
import errno
import os
from typing import Any

from ipykernel.ipkernel import IPythonKernel
from ipykernel.zmqshell import ZMQInteractiveShell
from jupyter_client.session import Session
from traitlets import Type

from agenticraft_kernel.worker.channel import Channel, encode_bundle

#: What the worker's kernel object has as its IOPub socket: messages sent to it become events.
IOPUB = "iopub"
COMM_MESSAGES = ("comm_open", "comm_msg", "comm_close")


def is_limit_error(exc: BaseException | None) -> bool:
    """Exceptions that mean a limit was hit: the worker reports them and the run rolls back."""
    return isinstance(exc, MemoryError) or (isinstance(exc, OSError) and exc.errno == errno.EFBIG)


class ChannelSession(Session):
    """A jupyter_client ``Session`` whose ``send`` writes channel events, not ZeroMQ frames.

    Everything that publishes the ipykernel way (``session.send(kernel.iopub_socket, ...)``:
    ipykernel's display publisher, display hook, comms, and libraries that do the same) ends here.
    """

    channel: Channel | None = None

    def send(self, stream: Any, msg_or_type: Any, content: Any = None, parent: Any = None,
             ident: Any = None, buffers: Any = None, track: bool = False, header: Any = None,
             metadata: Any = None) -> dict[str, Any] | None:
        if isinstance(msg_or_type, dict):
            msg = msg_or_type
        else:
            msg = self.msg(str(msg_or_type), content=content, parent=parent, header=header,
                           metadata=metadata)
        channel = self.channel
        if channel is None:
            return msg
        msg_type = str(msg["header"]["msg_type"])
        body = dict(msg.get("content") or {})
        if msg_type == "stream":
            channel.write_stream(str(body.get("name", "stdout")), str(body.get("text", "")))
        elif msg_type in COMM_MESSAGES:
            channel.emit({"type": msg_type, "content": body,
                          "metadata": dict(msg.get("metadata") or {}),
                          "buffers": [base64.b64encode(bytes(b)).decode("ascii")
                                      for b in buffers or msg.get("buffers") or ()]})
        else:
            if isinstance(body.get("data"), dict):
                body["data"] = encode_bundle(body["data"])
            channel.emit({**body, "type": msg_type})
        return msg


class WorkerShell(ZMQInteractiveShell):
    """ipykernel's shell; a limit hit inside a cell is the worker's to report, not an error."""

    limit_error: BaseException | None = None

    def enable_gui(self, gui: str | None = None) -> None:
        # ipykernel integrates GUI event loops through its own application; in the sandbox
        # there is no display server, only the inline backend.
        if gui not in (None, "inline"):
            raise NotImplementedError(f"GUI event loop {gui!r} is not available in the sandbox")

    def _showtraceback(self, etype: type[BaseException], evalue: BaseException,
                       stb: list[str]) -> None:
        if is_limit_error(evalue):
            self.limit_error = evalue  # reported as a limit by the worker, not as a cell error
            return
        super()._showtraceback(etype, evalue, stb)


class WorkerKernel(IPythonKernel):
    """ipykernel's kernel object without sockets: it owns the shell, session and comm manager
    the way ipykernel does; the worker's executor runs the requests."""

    shell_class = Type(WorkerShell)

    @property
    def kernel_info(self) -> dict[str, Any]:  # what get_ipython().kernel.kernel_info says
        return dict(super().kernel_info, supported_features=[])


def make_kernel(channel: Channel, config: Any) -> WorkerKernel:
    """The worker's kernel singleton (``Kernel.instance()`` is what ipykernel's comms use)."""
    # ipykernel imports debugpy when it builds its kernel object; without this, debugpy warns
    # about frozen modules on stderr (stock ipykernel avoids it with -Xfrozen_modules=off).
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    session = ChannelSession(key=b"")
    session.channel = channel
    kernel = WorkerKernel.instance(config=config, session=session, iopub_socket=IOPUB)
    return kernel
