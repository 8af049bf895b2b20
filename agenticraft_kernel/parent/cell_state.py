"""The secure kernel's per-cell state, with one owner: what the running cell is and how to stop it.

A cell request goes idle -> waiting (the request is in, the worker is not yet inside the cell) ->
running (the worker entered the cell, or a fresh sandbox runs it) -> idle. An interrupt that
arrives while waiting is held and delivered as soon as the worker is inside the cell; one that
arrives while a fresh sandbox runs the cell cancels that run (the engine kills its worker). An
``input()`` round trip with the frontend ends when the cell ends or is interrupted.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

IDLE, WAITING, INTERRUPTED, RUNNING = None, "waiting", "interrupted", "running"


class CellState:
    """The one object that changes the kernel's per-cell state (see the module docstring).

    ``interrupt_session`` sends an interrupt to the session's running cell.
    """

    def __init__(self, interrupt_session: Callable[[], None]) -> None:
        self._interrupt_session = interrupt_session
        self._phase: str | None = IDLE
        self._fresh: asyncio.Future[Any] | None = None
        self._input_cancel = threading.Event()

    @property
    def input_cancel(self) -> threading.Event:
        """Set when a pending ``input()`` must stop waiting for the frontend."""
        return self._input_cancel

    def waiting(self) -> None:
        """A cell request came in; the worker is not inside it yet."""
        self._phase = WAITING

    def idle(self) -> None:
        """The cell is over (or the parent answers it without running code)."""
        self._phase = IDLE
        self._fresh = None

    def session_run(self) -> None:
        """The session is about to run the cell: ``input()`` may ask the frontend."""
        self._input_cancel.clear()

    def session_done(self) -> None:
        self._phase = IDLE
        self._input_cancel.set()

    def started(self) -> None:
        """The worker entered the cell: from now on an interrupt lands in user code."""
        pending = self._phase == INTERRUPTED
        self._phase = RUNNING
        if pending:
            self._interrupt_session()

    def fresh_run(self, run: asyncio.Future[Any]) -> None:
        """A fresh sandbox runs the cell: an interrupt cancels ``run``."""
        pending = self._phase == INTERRUPTED  # an interrupt that came while preparing
        self._fresh = run
        self._phase = RUNNING
        if pending:
            run.cancel()

    def interrupt(self) -> None:
        """SIGINT or interrupt_request: stop the running cell, or hold it for the next one."""
        self._input_cancel.set()
        if self._fresh is not None and not self._fresh.done():
            self._fresh.cancel()
        elif self._phase == RUNNING:
            self._interrupt_session()
        elif self._phase == WAITING:
            self._phase = INTERRUPTED
