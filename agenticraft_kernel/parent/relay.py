"""Parent side: republish what the worker produced on IOPub, under the request that caused it.

Stream chunks are coalesced (a short timer, or before any other message) so a chatty cell becomes
a few ``stream`` messages; every other event keeps its place in the order. Comm buffers travel as
base64 inside the sandbox frames and become binary ZeroMQ buffers again here.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import Any

from agenticraft.sandbox.result import Output
from agenticraft.wire.streams import StreamBatch

STREAM_FLUSH_DELAY = 0.02
#: Worker event types that are IOPub messages of the same name.
IOPUB_EVENTS = ("display_data", "update_display_data", "execute_result", "clear_output", "error",
                "comm_open", "comm_msg", "comm_close")


class Relay:
    """IOPub publisher for one request (a cell, or a comm message from the frontend).

    ``publish(msg_type, content, buffers, metadata=None)`` sends one IOPub message.
    """

    def __init__(self, publish: Callable[..., None],
                 on_input: Callable[[str, bool], None] | None = None,
                 on_comm: Callable[[str, dict[str, Any]], None] | None = None,
                 on_started: Callable[[], None] | None = None,
                 blocked: Callable[[str], bool] | None = None) -> None:
        self.publish = publish
        self.blocked = blocked  # comm ids the worker may not use (the parent's panel)
        self.on_started = on_started
        self.on_input = on_input
        self.on_comm = on_comm
        self._streams = StreamBatch()
        self._timer: asyncio.TimerHandle | None = None
        self.errors: list[dict[str, Any]] = []

    # -- streams ---------------------------------------------------------------------------------
    def output(self, item: Output) -> None:
        """``on_output`` of the session: stdout/stderr text, already capped by the supervisor."""
        name = "stderr" if item.kind == "stderr" else "stdout"
        text = str(item.data)
        self._streams.add(name, text)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(STREAM_FLUSH_DELAY, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for name, text in self._streams.drain():
            self.publish("stream", {"name": name, "text": text}, None)

    # -- everything else -------------------------------------------------------------------------
    def event(self, event: dict[str, Any]) -> None:
        """``on_event`` of the session: one executor event."""
        kind = event.get("type")
        if kind == "cell_started":
            if self.on_started is not None:
                self.on_started()
            return
        if kind == "input_request":
            self.flush()
            if self.on_input is not None:
                self.on_input(str(event.get("prompt", "")), bool(event.get("password", False)))
            return
        if kind not in IOPUB_EVENTS:
            return
        self.flush()
        if kind in ("comm_open", "comm_msg", "comm_close"):
            content = event.get("content") if isinstance(event.get("content"), dict) else {}
            if self.blocked is not None and self.blocked(str(content.get("comm_id", ""))):
                return  # user code forging a message of the parent's panel: dropped
            buffers = [base64.b64decode(b) for b in event.get("buffers") or []]
            if self.on_comm is not None:
                self.on_comm(kind, content)
            metadata = event.get("metadata") if isinstance(event.get("metadata"), dict) else {}
            self.publish(kind, content, buffers or None, metadata)  # e.g. the widget protocol
            return
        content = {k: v for k, v in event.items() if k != "type"}
        if kind == "error":
            self.errors.append(content)
        self.publish(kind, content, None)

    def error(self, ename: str, evalue: str, traceback: list[str]) -> dict[str, Any]:
        """Publish an error output made by the kernel (a limit, a denial) and return it."""
        self.flush()
        content = {"ename": ename, "evalue": evalue, "traceback": traceback}
        self.errors.append(content)
        self.publish("error", content, None)
        return content
