"""``IdleWatch``: the thread that holds a session to its limits between runs. Pausing and
resuming it (before and after every run) does not wake its thread, so these check that it still
polls the watch it was given last, never a paused one, and never leaves a tree stopped."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import pytest

from agenticraft.sandbox import watchdog as watchdog_module
from agenticraft.sandbox.watchdog import IdleWatch
from agenticraft.wire.limits import ResourceLimits

pytestmark = pytest.mark.timeout(60)


class FakeWatchdog:
    """Stands for ``Watchdog``: counts polls, answers with ``answer``, records signals."""

    answer: tuple[Any, float] = (None, 0.0)

    def __init__(self, holder: int, *args: Any, **kwargs: Any) -> None:
        self.holder = holder
        self.runner = holder
        self.unit = None
        self.rss_watch = True
        self.polls = 0
        self.polled = threading.Event()
        self.signals: list[int] = []
        self.stopped = threading.Event()

    def check(self) -> tuple[Any, float]:
        self.polls += 1
        self.polled.set()
        return self.answer

    def signal_tree(self, sig: int) -> None:
        self.signals.append(sig)
        if sig == signal.SIGSTOP:
            self.stopped.set()


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[FakeWatchdog]:
    """Every watchdog the idle watch makes, in order."""
    made: list[FakeWatchdog] = []

    def make(*args: Any, **kwargs: Any) -> FakeWatchdog:
        made.append(FakeWatchdog(*args, **kwargs))
        return made[-1]
    monkeypatch.setattr(watchdog_module, "Watchdog", make)
    monkeypatch.setattr(IdleWatch, "INTERVAL", 0.02)
    return made


def watch(holder: int = 1) -> IdleWatch:
    return IdleWatch(holder, ResourceLimits(), "/nonexistent", lambda violation: None)


def test_a_watch_resumed_while_the_thread_waits_is_polled_and_the_paused_one_is_not(made):
    idle = watch()
    try:
        assert made[0].polled.wait(10)
        idle.pause()  # the thread is in its timed wait: neither call wakes it
        polls = made[0].polls
        idle.resume(2, ResourceLimits(), "/nonexistent")
        assert made[1].polled.wait(10), "the resumed watch was never polled"
        assert made[0].polls == polls, "a paused watch was polled"
    finally:
        idle.stop()


def test_a_watch_resumed_after_a_long_pause_is_polled(made):
    idle = watch()
    try:
        assert made[0].polled.wait(10)
        idle.pause()
        deadline = time.monotonic() + 10
        while not idle._unwatched:  # (it saw the pause: it waits without a timeout now)
            assert time.monotonic() < deadline
            time.sleep(0.005)
        idle.resume(2, ResourceLimits(), "/nonexistent")
        assert made[1].polled.wait(10), "a watch resumed after a long pause was never polled"
    finally:
        idle.stop()


def test_pause_resumes_a_tree_stopped_for_the_cpu_share_first(made, monkeypatch):
    monkeypatch.setattr(FakeWatchdog, "answer", (None, 30.0))  # stop the tree for 30 s
    idle = watch()
    try:
        assert made[0].stopped.wait(10)
        started = time.monotonic()
        idle.pause()
        assert time.monotonic() - started < 15, "pause waited for the CPU-share stop to end"
        assert made[0].signals[-1] == signal.SIGCONT, "pause left the tree stopped"
    finally:
        idle.stop()
