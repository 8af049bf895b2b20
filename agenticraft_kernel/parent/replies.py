"""The ``execute_reply`` contents the parent builds itself (a cell it answered or refused)."""

from __future__ import annotations

from typing import Any

from agenticraft_kernel.parent.relay import Relay


def one_line(ename: str, evalue: str) -> list[str]:
    """The traceback of a refusal, a limit or a usage error: one line, never a stack."""
    return [f"\x1b[0;31m{ename}\x1b[0m: {evalue}"]


def ok_reply(count: int) -> dict[str, Any]:
    return {"status": "ok", "execution_count": count, "user_expressions": {}, "payload": []}


def error_reply(relay: Relay, ename: str, evalue: str, count: int,
                traceback: list[str] | None = None) -> dict[str, Any]:
    """Publish the error output (one line unless ``traceback`` is given) and build the reply."""
    traceback = traceback or one_line(ename, evalue)
    relay.error(ename, evalue, traceback)
    return {"status": "error", "execution_count": count, "ename": ename, "evalue": evalue,
            "traceback": traceback, "user_expressions": {}, "payload": []}
