"""The kernel's comms in one place: the worker's (tracked) and the parent's own (served here).

The worker's comms (user code's widgets) are relayed; ``CommTable`` only remembers their ids and
target names for ``comm_info_request``. The parent's own comms carry the security panel's widgets.

ipywidgets opens its comms through ``comm.create_comm`` and finds them again through
``comm.get_comm_manager``; in the parent process both point here, so the panel's widget models
live in the trusted process. Their comm ids are the parent's: the kernel answers frontend
messages for them itself and drops any message the sandbox worker sends under one of them, so
user code can neither see nor forge the panel's traffic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import comm
from comm.base_comm import BaseComm, CommManager

Publish = Callable[[str, dict[str, Any], dict[str, Any], list[bytes] | None], None]


def _json_clean(value: Any) -> Any:
    from ipykernel.jsonutil import json_clean
    return json_clean(value)


class ParentComm(BaseComm):
    """A comm whose messages the parent publishes on IOPub (see the module docstring)."""

    publisher: Publish | None = None
    kernel = True  # ipywidgets sends only through comms that have a kernel

    def publish_msg(self, msg_type: str, data: Any = None, metadata: Any = None,
                    buffers: Any = None, **keys: Any) -> None:
        if self.publisher is None:
            return
        content = _json_clean({"data": {} if data is None else data, "comm_id": self.comm_id,
                               **keys})
        self.publisher(msg_type, content, _json_clean(metadata or {}),
                       [bytes(b) for b in buffers] if buffers else None)


class ParentComms(CommManager):
    """The parent's comm manager: which comm ids are the parent's, and their message handlers."""

    def owns(self, comm_id: str) -> bool:
        return comm_id in self.comms

    def handle(self, msg_type: str, msg: dict[str, Any]) -> None:
        """A frontend message for one of the parent's comms (never for the worker)."""
        if msg_type == "comm_msg":
            self.comm_msg(None, "", msg)  # type: ignore[arg-type]
        elif msg_type == "comm_close":
            self.comm_close(None, "", msg)  # type: ignore[arg-type]


def install(publish: Publish) -> ParentComms:
    """Route ``comm.create_comm`` of this (parent) process to ``publish``; returns the manager."""
    manager = ParentComms()
    bound = type("BoundParentComm", (ParentComm,), {"publisher": staticmethod(publish)})
    comm.create_comm = bound
    comm.get_comm_manager = lambda: manager
    return manager


class CommTable:
    """Every comm of the kernel: ids the worker opened, and the parent's own comm manager."""

    def __init__(self) -> None:
        self.worker: dict[str, str] = {}  # comm id -> target name
        self.models: dict[str, str] = {}  # comm id -> widget model name (the output policy's)
        self.parent: ParentComms | None = None

    def track(self, kind: str, content: dict[str, Any]) -> None:
        """A comm message between the frontend and the worker, in either direction."""
        comm_id = str(content.get("comm_id", ""))
        if kind == "comm_open":
            self.worker[comm_id] = str(content.get("target_name", ""))
            data = content.get("data")
            state = data.get("state") if isinstance(data, dict) else None
            if isinstance(state, dict) and isinstance(state.get("_model_name"), str):
                self.models[comm_id] = state["_model_name"]
        elif kind == "comm_close":
            self.worker.pop(comm_id, None)
            self.models.pop(comm_id, None)

    def model_of(self, comm_id: str) -> str | None:
        return self.models.get(comm_id)

    def is_parent(self, comm_id: str) -> bool:
        """Comm ids of the parent's own widgets: never the worker's to use."""
        return self.parent is not None and self.parent.owns(comm_id)

    def serve_parent(self, publish: Publish) -> None:
        """Let this process open comms of its own (on first use; see ``install``)."""
        if self.parent is None:
            self.parent = install(publish)

    def handle_parent(self, msg_type: str, msg: dict[str, Any]) -> None:
        """A frontend message for one of the parent's comms: answered here, never relayed."""
        if self.parent is not None and msg_type != "comm_open":
            self.parent.handle(msg_type, msg)

    def listing(self, target: str | None = None) -> dict[str, dict[str, str]]:
        """``comm_info_reply`` content: every open comm, or those of ``target``."""
        known = dict(self.worker)
        if self.parent is not None:
            known.update({cid: c.target_name for cid, c in self.parent.comms.items()})
        return {cid: {"target_name": name} for cid, name in known.items()
                if target is None or name == target}
