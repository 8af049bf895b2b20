"""Parent side: republish what the worker produced on IOPub, under the request that caused it.

Stream chunks are coalesced (a short timer, or before any other message) so a chatty cell becomes
a few ``stream`` messages; every other event keeps its place in the order. Comm buffers travel as
base64 inside the sandbox frames and become binary ZeroMQ buffers again here.

Everything from the worker is the attacker's data: every mime bundle (display data, results,
pager payloads, user expressions) passes the ``OutputPolicy`` first, and a cell whose output was
cleaned gets one visible note; ``removed`` is what its audit record says was taken out. Once the
request is over (``close``) nothing more is published under its header.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Mapping
from typing import Any

from agenticraft.sandbox.result import Output
from agenticraft.wire.streams import StreamBatch
from agenticraft_kernel.parent.output_policy import OutputPolicy, note

STREAM_FLUSH_DELAY = 0.02
#: Worker event types that are IOPub messages of the same name.
IOPUB_EVENTS = ("display_data", "update_display_data", "execute_result", "clear_output", "error",
                "comm_open", "comm_msg", "comm_close")
#: The debugger's events: not under the request's header (see ``parent.debug``).
DEBUG_EVENTS = frozenset({"debug_event", "debug_reply"})
#: Events whose ``data`` is a mime bundle the browser renders.
BUNDLE_EVENTS = frozenset({"display_data", "update_display_data", "execute_result"})
#: The payload kinds ipykernel sends; anything else in a worker's reply is dropped.
PAYLOAD_SOURCES = frozenset({"page", "set_next_input", "ask_exit", "edit_magic"})


class Relay:
    """IOPub publisher for one request (a cell, or a comm message from the frontend).

    ``publish(msg_type, content, buffers, metadata=None)`` sends one IOPub message.
    """

    def __init__(self, publish: Callable[..., None],
                 on_input: Callable[[str, bool], None] | None = None,
                 on_comm: Callable[[str, dict[str, Any]], None] | None = None,
                 on_started: Callable[[], None] | None = None,
                 blocked: Callable[[str], bool] | None = None,
                 policy: OutputPolicy | None = None,
                 model_of: Callable[[str], str | None] | None = None,
                 on_debug: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self._publish = publish
        self.on_debug = on_debug  # the debugger's events and replies (not this request's)
        self.model_of = model_of  # a comm's widget model (HTML widgets are cleaned)
        self.policy = policy or OutputPolicy()
        self.removed: list[str] = []
        self._noted = False
        self.closed = False
        self.blocked = blocked  # comm ids the worker may not use (the parent's panel)
        self.on_started = on_started
        self.on_input = on_input
        self.on_comm = on_comm
        self._streams = StreamBatch()
        self._timer: asyncio.TimerHandle | None = None
        self.errors: list[dict[str, Any]] = []

    def publish(self, msg_type: str, content: dict[str, Any], buffers: list[bytes] | None,
                metadata: dict[str, Any] | None = None) -> None:
        """One IOPub message under this request's header (none once the request is over)."""
        if not self.closed:
            self._publish(msg_type, content, buffers, metadata)

    def close(self) -> None:
        """The request is answered: what arrives later belongs to no cell and is dropped."""
        self.flush()
        self.closed = True

    # -- the output policy -----------------------------------------------------------------------
    def clean(self, data: Any) -> dict[str, Any]:
        """A bundle as it may reach the browser (see ``OutputPolicy``); notes what was removed."""
        if not isinstance(data, Mapping):
            self._note(["a bundle that is not a mapping dropped"])
            return {}
        kept, removed = self.policy.clean_bundle(data)
        if removed:
            self._note(removed)
        return kept

    def _note(self, removed: list[str]) -> None:
        self.removed.extend(removed)

    def _show_note(self) -> None:
        """One visible line per cell, after the first output it is about."""
        if self.removed and not self._noted:
            self._noted = True
            self.flush()
            self.publish("stream", {"name": "stderr", "text": note(self.removed)}, None)

    def _clean_comm(self, content: dict[str, Any]) -> dict[str, Any]:
        data = content.get("data")
        if not isinstance(data, Mapping) or not isinstance(data.get("state"), Mapping):
            return content
        state = data["state"]
        model = state.get("_model_name")
        if not isinstance(model, str) and self.model_of is not None:
            model = self.model_of(str(content.get("comm_id", "")))
        clean, removed = self.policy.clean_widget_state(state, model if isinstance(
            model, str) else None)
        if removed:
            self._note(removed)
        return {**content, "data": {**data, "state": clean}}

    def audit_fields(self) -> dict[str, Any]:
        """What the cell's audit record says about removed output (nothing when none was)."""
        return {"output_removed": list(dict.fromkeys(self.removed))} if self.removed else {}

    def reply_fields(self, values: Mapping[str, Any], room: int) -> dict[str, Any]:
        """``payload`` and ``user_expressions`` of an execute_reply from the worker's values:
        only the payload kinds ipykernel sends, bundles cleaned, and both together at most
        ``room`` bytes (what is left of max_output_bytes) or dropped."""
        payload = []
        for item in values.get("payload") or []:
            if not isinstance(item, Mapping) or item.get("source") not in PAYLOAD_SOURCES:
                self._note(["a payload of an unknown kind dropped"])
                continue
            item = dict(item)
            if item["source"] == "page":
                item["data"] = self.clean(item.get("data"))
            payload.append(item)
        expressions: dict[str, Any] = {}
        raw = values.get("user_expressions")
        for name, value in (raw.items() if isinstance(raw, Mapping) else ()):
            if isinstance(value, Mapping):
                value = dict(value)
                if "data" in value:
                    value["data"] = self.clean(value["data"])
            expressions[str(name)] = value
        size = len(json.dumps([payload, expressions], default=repr))
        if size > room:
            self._note([f"payload and user_expressions of {size} bytes dropped (over "
                        "max_output_bytes)"])
            payload, expressions = [], {}
        self._show_note()
        return {"payload": payload, "user_expressions": expressions}

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
        if kind in DEBUG_EVENTS:
            if self.on_debug is not None:
                self.on_debug(str(kind), event)
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
            content = self._clean_comm(content)
            metadata = event.get("metadata") if isinstance(event.get("metadata"), dict) else {}
            self.publish(kind, content, buffers or None, metadata)  # e.g. the widget protocol
            self._show_note()
            return
        content = {k: v for k, v in event.items() if k != "type"}
        if kind in BUNDLE_EVENTS:
            before = content.get("data")
            content["data"] = self.clean(before)
            if before and not content["data"] and kind != "update_display_data":
                self._show_note()
                return  # nothing of it may be shown (its note says why)
        if kind == "error":
            content = {"ename": str(content.get("ename", "Error")),
                       "evalue": str(content.get("evalue", "")),
                       "traceback": [str(line) for line in content.get("traceback") or []]
                       if isinstance(content.get("traceback"), list) else []}
            self.errors.append(content)
        self.publish(kind, content, None)
        self._show_note()

    def error(self, ename: str, evalue: str, traceback: list[str]) -> dict[str, Any]:
        """Publish an error output made by the kernel (a limit, a denial) and return it."""
        self.flush()
        content = {"ename": ename, "evalue": evalue, "traceback": traceback}
        self.errors.append(content)
        self.publish("error", content, None)
        return content
