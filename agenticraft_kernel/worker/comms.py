"""Worker side: Jupyter comms (ipywidgets and friends) over the sandbox channel.

The ``comm`` package lets a kernel plug in its Comm class; ipywidgets creates its comms through
``comm.create_comm``. Ours publishes comm messages as channel events; the kernel republishes them
on IOPub and sends the frontend's comm messages back as ``kind="comm"`` runs.
"""

from __future__ import annotations

import base64
from typing import Any

from comm.base_comm import BaseComm

from agenticraft_kernel.worker.channel import Channel


def make_comm_class(channel: Channel | None) -> type[BaseComm]:
    """A Comm class bound to this worker's channel (what ``comm.create_comm`` returns)."""

    class WorkerComm(BaseComm):
        def publish_msg(self, msg_type: str, data: Any = None, metadata: Any = None,
                        buffers: Any = None, **keys: Any) -> None:
            assert channel is not None
            content = {"data": {} if data is None else data, "comm_id": self.comm_id, **keys}
            channel.emit({"type": msg_type, "content": content, "metadata": metadata or {},
                          "buffers": [base64.b64encode(bytes(b)).decode("ascii")
                                      for b in buffers or ()]})

    return WorkerComm
