"""The stdin channel has one owner thread and at most one outstanding input_request (issue 13)."""

from __future__ import annotations

import threading
from typing import Any

from agenticraft_kernel.parent import stdin
from agenticraft_kernel.parent.stdin import StdinServer


async def test_one_outstanding_request_served_on_one_thread(monkeypatch: Any) -> None:
    threads: set[int] = set()
    release = threading.Event()

    def fake_ask(*args: Any) -> str:
        threads.add(threading.get_ident())
        release.wait(5)
        return "answer"

    monkeypatch.setattr(stdin, "ask_frontend", fake_ask)
    server = StdinServer()
    assert server.reserve()
    assert not server.reserve()  # a second request while one is outstanding is not served
    pending = server.ask(None, None, "?", False, {}, None, threading.Event())  # type: ignore
    release.set()
    assert await pending == "answer"
    assert server.reserve()
    release.set()
    assert await server.ask(None, None, "?", False, {}, None, threading.Event()) == "answer"  # type: ignore
    assert len(threads) == 1
