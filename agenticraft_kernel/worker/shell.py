"""Worker side: an IPython ``InteractiveShell`` whose outputs become channel events.

Cells keep IPython semantics (display hooks, ``Out``/``_``, rich reprs, tracebacks, magics): the
shell is IPython's own; only where output goes is changed, the way ipykernel's
``ZMQInteractiveShell`` changes it, but to the sandbox channel instead of ZeroMQ.
"""

from __future__ import annotations

import sys
from typing import Any

from IPython.core.displayhook import DisplayHook
from IPython.core.displaypub import DisplayPublisher
from IPython.core.interactiveshell import InteractiveShell
from traitlets import Any as AnyTrait
from traitlets import Type

from agenticraft.jail.limit_errors import classify
from agenticraft_kernel.worker.channel import Channel, encode_bundle


def is_limit_error(exc: BaseException | None) -> bool:
    """Exceptions that mean a limit was hit: the worker reports them and the run rolls back."""
    return classify(exc) is not None


class ChannelDisplayPublisher(DisplayPublisher):
    """``display()``, ``update_display()`` and ``clear_output()`` as channel events."""

    channel: Channel | None = None

    def publish(self, data: dict[str, Any], metadata: dict[str, Any] | None = None,  # type: ignore[override]
                source: Any = None, *, transient: dict[str, Any] | None = None,
                update: bool = False, **kwargs: Any) -> None:
        assert self.channel is not None
        self.channel.emit({"type": "update_display_data" if update else "display_data",
                           "data": encode_bundle(data), "metadata": metadata or {},
                           "transient": transient or {}})

    def clear_output(self, wait: bool = False) -> None:
        assert self.channel is not None
        self.channel.emit({"type": "clear_output", "wait": bool(wait)})


class ChannelDisplayHook(DisplayHook):
    """The value of a cell's last expression as an ``execute_result`` event."""

    channel: Channel | None = None
    _pending: dict[str, Any] | None = None

    def start_displayhook(self) -> None:
        self._pending = {"type": "execute_result", "execution_count": self.prompt_count,
                         "data": {}, "metadata": {}}

    def write_output_prompt(self) -> None:
        if self._pending is not None:
            self._pending["execution_count"] = self.prompt_count

    def write_format_data(self, format_dict: dict[str, Any],
                          md_dict: dict[str, Any] | None = None) -> None:
        if self._pending is not None:
            self._pending["data"] = encode_bundle(format_dict)
            self._pending["metadata"] = md_dict or {}

    def finish_displayhook(self) -> None:
        pending, self._pending = self._pending, None
        if pending and pending["data"] and self.channel is not None:
            self.channel.emit(pending)


class SessionShim:
    """``get_ipython().kernel.session``: code written for ipykernel publishes IOPub messages
    with ``session.send(kernel.iopub_socket, msg_type, content, parent=ip.parent_header)``; here
    that becomes a channel event the kernel republishes (under the cell's request)."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    def send(self, stream: Any, msg_or_type: Any, content: dict[str, Any] | None = None,
             parent: Any = None, ident: Any = None, buffers: Any = None, track: bool = False,
             header: Any = None, metadata: Any = None) -> dict[str, Any]:
        if isinstance(msg_or_type, dict):
            msg_type = msg_or_type["header"]["msg_type"]
            content = msg_or_type.get("content", content)
        else:
            msg_type = str(msg_or_type)
        event = dict(content or {})
        if isinstance(event.get("data"), dict):
            event["data"] = encode_bundle(event["data"])
        self.channel.emit({**event, "type": msg_type})
        return {"header": {"msg_type": msg_type}, "content": content or {}}


class KernelShim:
    """The part of ipykernel's kernel object that notebooks use directly."""

    iopub_socket = "iopub"

    def __init__(self, channel: Channel) -> None:
        self.session = SessionShim(channel)


class WorkerShell(InteractiveShell):
    """The shell inside the sandbox. History is in memory (``:memory:``); output is events."""

    display_pub_class = Type(ChannelDisplayPublisher)
    displayhook_class = Type(ChannelDisplayHook)
    channel = AnyTrait(None)
    _last_traceback: list[str] | None = None
    limit_error: BaseException | None = None
    #: The current run's limits (set by the executor before each cell).
    limits: dict[str, Any] = {}

    parent_header: dict[str, Any] = {}

    @property
    def kernel(self) -> KernelShim:
        return KernelShim(self.channel)

    def init_display_pub(self) -> None:
        super().init_display_pub()
        self.display_pub.channel = self.channel

    def init_displayhook(self) -> None:
        super().init_displayhook()
        self.displayhook.channel = self.channel

    def init_hooks(self) -> None:
        super().init_hooks()
        from IPython.core import page, payloadpage
        # ``obj?`` and %pinfo page into the reply payload, as in ipykernel (no terminal pager).
        self.set_hook("show_in_pager", page.as_hook(payloadpage.page), 99)

    def init_magics(self) -> None:
        super().init_magics()
        self.register_magic_function(self._pip_magic, "line", "pip")

    def _pip_magic(self, line: str) -> None:
        """``%pip``: IPython's, unless the network is off; then one line saying so."""
        if not self.limits.get("network_access"):
            from IPython.core.error import UsageError
            raise UsageError("%pip cannot install anything: the network is off in this sandbox "
                             "(network_access=False). Install packages in the kernel's own "
                             "environment, or ask for network_access.")
        from IPython.core.magics.packaging import PackagingMagics
        PackagingMagics(self).pip(line)

    def system_piped(self, cmd: str) -> None:
        """``!cmd`` and ``%%sh``-style calls: the command writes straight to the cell's stdout and
        stderr. Without a pty: IPython's pexpect-based runner needs a new session (setsid),
        which the sandbox's seccomp filter denies."""
        import subprocess
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        self.user_ns["_exit_code"] = subprocess.call(
            self.var_expand(cmd, depth=1), shell=True, stdin=subprocess.DEVNULL)

    system = system_piped

    def enable_gui(self, gui: str | None = None) -> None:
        if gui not in (None, "inline"):
            raise NotImplementedError(f"GUI event loop {gui!r} is not available in the sandbox")

    def _showtraceback(self, etype: type[BaseException], evalue: BaseException,
                       stb: list[str]) -> None:
        if is_limit_error(evalue):
            self.limit_error = evalue  # reported as a limit by the worker, not as a cell error
            return
        self._last_traceback = stb
        self.channel.emit({"type": "error", "ename": etype.__name__, "evalue": str(evalue),
                           "traceback": stb})
