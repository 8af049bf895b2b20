"""Live memory and CPU of the cell a session is running, read from /proc by the parent.

During a run the session's worker waits as the checkpoint and the cell runs in its forked child
(see ``agenticraft.jail.worker``), so the running cell is the worker's process tree
below the worker itself. The numbers come from the supervisor's own /proc readers; nothing the
sandbox reports about itself is used.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from agenticraft.jail.tree import descendants
from agenticraft.sandbox.watchdog import MB, read_usage, rss_bytes


class TreeSampler:
    """``sample()`` -> (resident MB, CPU percent since the previous sample) of the running cell;
    None where there is nothing to measure yet."""

    def __init__(self, holder: Callable[[], int | None]) -> None:
        self.holder = holder
        self._last: tuple[float, float] | None = None  # (monotonic time, cpu seconds)

    def sample(self) -> tuple[float | None, float | None]:
        pid = self.holder()
        if not pid:
            return None, None
        tree = descendants(pid)
        if not tree:
            return None, None
        memory = sum(rss_bytes(p) for p in tree) / MB
        cpu = sum(read_usage(p)[0] for p in tree)
        now = time.monotonic()
        percent = None
        if self._last is not None and now > self._last[0]:
            percent = max(0.0, 100.0 * (cpu - self._last[1]) / (now - self._last[0]))
        self._last = (now, cpu)
        return memory, percent
