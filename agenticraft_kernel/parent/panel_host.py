"""The one host of the security panel, for the secure kernel and for stock kernels alike.

The panel (``views.panel``) knows nothing about kernels; its host creates it on first use (with
a factory its owner supplies), shows it, and feeds it while a cell runs: the cell's limits, then a
sample every ``SAMPLE_INTERVAL`` seconds (memory and CPU of the process tree ``holder`` names,
read from /proc by the parent; elapsed time only when there is no tree to read), and the last
cells when it ends. In the secure kernel the panel's widgets live on the parent's own comms
(``comms.CommTable``); in a stock kernel on the kernel's, and ``dispatch`` moves every feed onto
the thread that owns the display.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from agenticraft.wire.limits import ResourceLimits
from agenticraft_kernel.parent.live_usage import TreeSampler

SAMPLE_INTERVAL = 0.25
#: Shows a mime bundle that can be refreshed later; returns the function that refreshes it.
ShowLive = Callable[[dict[str, Any]], Callable[[dict[str, Any]], None]]


def _direct(call: Callable[[], None]) -> None:
    call()


class PanelHost:
    """One panel per kernel (``%secure_panel`` shows it again), fed while cells run."""

    def __init__(self, make: Callable[[], Any], *,
                 dispatch: Callable[[Callable[[], None]], None] = _direct,
                 log: logging.Logger | logging.LoggerAdapter[Any] | None = None) -> None:
        self._make = make
        self._dispatch = dispatch
        self.log = log or logging.getLogger(__name__)
        self.panel: Any = None

    def ensure(self) -> Any:
        """The panel, created on first use."""
        if self.panel is None:
            self.panel = self._make()
        return self.panel

    def show(self, show_live: ShowLive) -> None:
        """Display the panel; a text panel refreshes that display as cells run."""
        panel = self.ensure()
        panel.update = show_live(panel.bundle())

    def _feed(self, what: str, call: Callable[[], None]) -> bool:
        """Run one feed of the panel on its thread; False if it failed (it is logged)."""
        ok = True

        def guarded() -> None:
            nonlocal ok
            try:
                call()
            except Exception:
                ok = False
                self.log.exception("the security panel could not %s", what)

        self._dispatch(guarded)
        return ok

    def start(self, label: str, limits: ResourceLimits,
              holder: Callable[[], int | None]) -> asyncio.Task[None] | None:
        """A cell starts: show its limits and sample it until ``stop`` (if a panel exists)."""
        panel = self.panel
        if panel is None or not self._feed("show a running cell",
                                           lambda: panel.start_cell(label, limits)):
            return None
        return asyncio.get_running_loop().create_task(self._sample(panel, holder))

    async def _sample(self, panel: Any, holder: Callable[[], int | None]) -> None:
        sampler = TreeSampler(holder)
        started = time.monotonic()
        while True:
            memory, cpu = sampler.sample()
            elapsed = time.monotonic() - started
            if not self._feed("be updated", lambda e=elapsed, m=memory, c=cpu:  # type: ignore[misc]
                              panel.sample(e, m, c)):
                return
            await asyncio.sleep(SAMPLE_INTERVAL)

    @staticmethod
    def stop(task: asyncio.Task[None] | None) -> None:
        if task is not None:
            task.cancel()

    def idle(self) -> None:
        """After every cell: the last cells, the audit history and idle gauges."""
        panel = self.panel
        if panel is not None:
            self._feed("be updated", panel.end_cell)
