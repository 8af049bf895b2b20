"""Parent side: one ``input()`` round trip with the frontend on the stdin channel.

Runs in a thread (``asyncio.to_thread``) so the kernel's event loop keeps serving heartbeats,
interrupts and other requests while the user types; ``cancel`` ends the wait when the cell ends
or is interrupted.
"""

from __future__ import annotations

import threading
from typing import Any

import zmq
from jupyter_client.session import Session


def ask_frontend(session: Session, stdin_socket: Any, prompt: str, password: bool,
                 parent: dict[str, Any], ident: Any, cancel: threading.Event) -> str | None:
    """The frontend's answer, or None if ``cancel`` was set first."""
    while True:  # drop stale replies of an earlier, interrupted request
        try:
            stdin_socket.recv_multipart(zmq.NOBLOCK)
        except zmq.ZMQError:
            break
    session.send(stdin_socket, "input_request", {"prompt": prompt, "password": password},
                 parent, ident=ident)
    while not cancel.is_set():
        readable, _, _ = zmq.select([stdin_socket], [], [], 0.05)
        if readable:
            _, reply = session.recv(stdin_socket)
            if reply is not None:
                return str(reply.get("content", {}).get("value", ""))
    return None
