"""Parent side: ``input()`` round trips with the frontend on the stdin channel.

One thread owns the stdin socket (ZeroMQ sockets are not thread-safe: two threads using it at
once abort the process), and it serves one request at a time: while an ``input_request`` is
outstanding, further requests from the worker are not served (``reserve`` says no). The kernel's
event loop keeps serving heartbeats, interrupts and other requests while the user types;
``cancel`` ends the wait when the cell ends or is interrupted.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any

import zmq
from jupyter_client.session import Session


class StdinServer:
    """The stdin socket's one owner: one outstanding ``input_request`` at a time."""

    def __init__(self) -> None:
        self._thread = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="agenticraft-stdin")
        self.busy = False

    def reserve(self) -> bool:
        """Claim the stdin channel for one request; False while another one is outstanding."""
        if self.busy:
            return False
        self.busy = True
        return True

    async def ask(self, session: Session, stdin_socket: Any, prompt: str, password: bool,
                  parent: dict[str, Any], ident: Any, cancel: threading.Event) -> str | None:
        """Serve a reserved request on the owner thread; releases the reservation."""
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._thread, ask_frontend, session, stdin_socket, prompt, password, parent,
                ident, cancel)
        finally:
            self.busy = False


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
