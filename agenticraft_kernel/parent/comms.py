"""Comms served by the parent kernel itself: the transport of the security panel's widgets.

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
