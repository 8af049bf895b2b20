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
import importlib
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from ipykernel.ipkernel import IPythonKernel
from ipykernel.zmqshell import ZMQInteractiveShell
from jupyter_client.session import Session

from agenticraft.jail.limit_errors import classify
from agenticraft_kernel.worker.channel import Channel, encode_bundle

#: What the worker's kernel object has as its IOPub socket: messages sent to it become events.
IOPUB = "iopub"
COMM_MESSAGES = ("comm_open", "comm_msg", "comm_close")


def _import_ipykernel_without_debugpy() -> None:
    """Import ipykernel's debugger module with debugpy hidden, so it records "no debugpy".

    The worker's kernel object serves no debugger (the parent advertises none), yet
    ``IPythonKernel`` would import debugpy and pydevd (about 8 MB per worker) and debugpy would
    warn about frozen modules on stderr. ``None`` in ``sys.modules`` makes that one import fail;
    the entry is removed again, so a cell can still ``import debugpy`` itself."""
    hidden = "debugpy" not in sys.modules
    if hidden:
        sys.modules["debugpy"] = None  # type: ignore[assignment]
    try:
        import ipykernel.debugger  # noqa: F401
    finally:
        if hidden:
            del sys.modules["debugpy"]


def is_limit_error(exc: BaseException | None) -> bool:
    """Exceptions that mean a limit was hit: the worker reports them and the run rolls back."""
    return classify(exc) is not None


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


def _enable_gui(gui: str | None = None) -> None:
    """``shell.enable_gui``: ipykernel integrates GUI event loops through its application; in the
    sandbox there is no display server, only the inline backend."""
    if gui not in (None, "inline"):
        raise NotImplementedError(f"GUI event loop {gui!r} is not available in the sandbox")


def _limit_aware(show: Callable[..., None], shell: ZMQInteractiveShell) -> Callable[..., None]:
    """``shell._showtraceback``: a limit hit inside a cell is the worker's to report (the run
    rolls back), not a cell error; everything else is ipykernel's own error output."""

    def showtraceback(etype: type[BaseException], evalue: BaseException,
                      stb: list[str]) -> None:
        if is_limit_error(evalue):
            shell.limit_error = evalue  # type: ignore[attr-defined]
            return
        show(etype, evalue, stb)

    return showtraceback


def make_kernel(channel: Channel, config: Any,
                input_request: Callable[[str, bool], str]) -> IPythonKernel:
    """ipykernel's kernel singleton and shell, as stock classes (code that checks the class, its
    module or ``Kernel.instance()``, like plotly and ipykernel's comms, sees ipykernel).

    ``input_request(prompt, password)`` answers ``input()``/``getpass`` once ipykernel's own
    ``raw_input`` has checked ``allow_stdin``; instance attributes replace the few methods that
    would otherwise reach for ZeroMQ sockets or ipykernel's application.
    """
    _import_ipykernel_without_debugpy()
    session = ChannelSession(key=b"")
    session.channel = channel
    kernel = IPythonKernel.instance(config=config, session=session, iopub_socket=IOPUB)
    kernel._input_request = (  # type: ignore[method-assign]
        lambda prompt, ident, parent, password=False: input_request(str(prompt), password))
    shell = kernel.shell
    assert isinstance(shell, ZMQInteractiveShell)
    shell.limit_error = None  # type: ignore[attr-defined]
    shell.limits = {}  # type: ignore[attr-defined]  # the current run's (set by the executor)
    shell.enable_gui = _enable_gui  # type: ignore[method-assign]
    shell.system = shell.system_piped = _system_piped(shell)  # type: ignore[method-assign]
    shell.register_magic_function(_pip_magic(shell), "line", "pip")
    shell._showtraceback = _limit_aware(shell._showtraceback, shell)  # type: ignore[method-assign]
    return kernel


def _system_piped(shell: ZMQInteractiveShell) -> Callable[[str], None]:
    """``!cmd`` and ``%%sh``-style calls: the command writes straight to the cell's stdout and
    stderr. Without a pty: IPython's pexpect-based runner needs a new session (setsid), which
    the sandbox's seccomp filter denies."""

    def system(cmd: str) -> None:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        shell.user_ns["_exit_code"] = subprocess.call(
            shell.var_expand(cmd, depth=1), shell=True, stdin=subprocess.DEVNULL)

    return system


def _pip_magic(shell: ZMQInteractiveShell) -> Callable[[str], None]:
    """``%pip``: IPython's, into the sandbox's private site directory, unless the network is
    off; then one line saying so."""

    def pip(line: str) -> None:
        if not shell.limits.get("network_access"):  # type: ignore[attr-defined]
            from IPython.core.error import UsageError
            raise UsageError("%pip cannot install anything: the network is off in this sandbox "
                             "(network_access=False). Install packages in the kernel's own "
                             "environment, or ask for network_access.")
        from IPython.core.magics.packaging import PackagingMagics
        PackagingMagics(shell).pip(_pip_into_scratch(line))
        importlib.invalidate_caches()

    pip.__name__ = "pip"
    return pip


#: pip options that already say where to install.
_PIP_PLACES = ("--target", "-t", "--user", "--prefix", "--root")


def _pip_into_scratch(line: str) -> str:
    """``%pip install X`` installs into the sandbox's private site directory (the environment
    is read-only in the sandbox), which is put first on ``sys.path``."""
    words = line.split()
    if not words or words[0] != "install" or any(w.split("=")[0] in _PIP_PLACES for w in words):
        return line
    site = os.path.join(os.environ.get("HOME") or tempfile.gettempdir(), "site-packages")
    if site not in sys.path:
        sys.path.insert(0, site)
    return f"install --target {shlex.quote(site)} {line[len('install'):].strip()}"
