"""The worker's control path (used by the kernel's debugger): once ``listen`` is called a thread
reads the channel, hands ``control`` frames to the handler at once even while the main thread is
held inside a run, and passes every other frame to the main thread in order; an event kept for
want of a run goes out first in the next run, tagged with it; runs are no longer forked."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from typing import Any

import pytest

from agenticraft.jail.worker import Worker
from agenticraft.wire import protocol


class Held:
    """An executor whose run blocks until the test releases it (a cell at a breakpoint)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.worker: Worker | None = None
        self.controls: list[dict[str, Any]] = []
        self.controlled = threading.Semaphore(0)

    def attach(self, worker: Worker) -> None:
        self.worker = worker

    def run(self, code: str, msg: dict[str, Any]) -> dict[str, Any]:
        assert self.worker is not None
        if code == "listen":
            self.worker.listen(self.control)
            return {"listening": True}
        self.release.wait(10)
        return {"ran": code}

    def control(self, frame: dict[str, Any]) -> None:
        assert self.worker is not None
        self.controls.append(frame)
        self.worker.emit({"type": "debug_reply", "id": frame["id"]}, keep=True)
        self.controlled.release()


def recv(chan: socket.socket) -> dict[str, Any]:
    frame = protocol.recv(chan)
    assert frame is not None
    return frame


def test_control_frames_are_served_while_a_run_is_held(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "_exit", _stop)
    host, inside = socket.socketpair()
    executor = Held()
    worker = Worker(inside, "unused")
    worker.executor = executor
    executor.attach(worker)
    thread = threading.Thread(target=serve, args=(worker,), daemon=True)
    thread.start()
    try:
        assert recv(host)["ev"] == "ready"
        protocol.send(host, {"op": "run", "run": 1, "code": "listen", "checkpoint": False})
        assert recv(host) == {"ev": "done", "run": 1, "ok": True, "values": {"listening": True}}
        # a checkpoint run is not forked any more: it runs here and is held
        protocol.send(host, {"op": "run", "run": 2, "code": "held", "checkpoint": True})
        protocol.send(host, {"op": "control", "kind": "debug", "id": 7, "request": {}})
        assert recv(host) == {"ev": "event", "run": 2, "data": {"type": "debug_reply", "id": 7}}
        assert [c["id"] for c in executor.controls] == [7]
        executor.release.set()
        assert recv(host)["values"] == {"ran": "held"}
        # between runs: the reply is kept, and sent first in the next run, tagged with it
        executor.release.clear()
        protocol.send(host, {"op": "control", "kind": "debug", "id": 8, "request": {}})
        assert executor.controlled.acquire(timeout=10)  # the first one's
        assert executor.controlled.acquire(timeout=10)
        executor.release.set()
        protocol.send(host, {"op": "run", "run": 3, "code": "next", "checkpoint": False})
        assert recv(host) == {"ev": "event", "run": 3, "data": {"type": "debug_reply", "id": 8}}
        assert recv(host)["values"] == {"ran": "next"}
    finally:
        protocol.send(host, {"op": "exit"})
        thread.join(10)  # it must end here, while os._exit is still the test's
        host.close()
    assert not thread.is_alive()


class Stop(Exception):
    """``Worker.serve`` ends its process with ``os._exit``: here it ends the thread."""


def _stop(code: int) -> None:
    raise Stop(code)


def serve(worker: Worker) -> None:
    with contextlib.suppress(Stop):
        worker.serve({})
