"""What one run may send the host, checked on each frame's header before any work is done.

The worker is the attacker's process: it can write any bytes to its channel. Decoding costs the
host memory (a JSON shape can expand ~20x) and CPU, so every frame is weighed on its header
(size and kind) against the run's budget first:

- event frames (output) share ``2 x max_output_bytes + EVENT_SLACK`` bytes (JSON escaping can
  double text); past that, larger frames are discarded undecoded (the output is cut) and only
  small ones are still read, so that ``input()`` and the run's end keep working;
- result frames (``started``, ``done``, ``rolled_back``) are few, each at most
  ``2 x max_output_bytes + RESULT_SLACK`` bytes: a larger result is the run going over
  ``max_output_bytes``;
- frames of any kind: ``FRAME_BASE`` plus ``FRAME_RATE`` per second of the run; control events
  (``input_request`` and kin, which the output cap does not cut): ``MAX_CONTROL_EVENTS``.

Going over a count is abuse (``BudgetExceeded``): the run is killed and the error says why.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from agenticraft.wire.limits import ResourceLimits
from agenticraft.wire.protocol import ProtocolError

EVENT_SLACK = 64 * 1024
SMALL_EVENT = 4096           # still decoded once the output is used up (input(), comms)
RESULT_SLACK = 1024 * 1024
MAX_RESULT_FRAMES = 8
FRAME_BASE = 20_000
FRAME_RATE = 5_000           # frames per second of run time, on top of FRAME_BASE
MAX_CONTROL_EVENTS = 1_000


class BudgetExceeded(ProtocolError):
    """The worker sent more frames, or more control events, than any honest run does."""


class ResultTooLarge(ProtocolError):
    """A result frame over the run's output allowance (reported as ``max_output_bytes``)."""

    def __init__(self, size: int, allowed: int) -> None:
        super().__init__(f"a result of {size} bytes is over the {allowed} bytes allowed")
        self.size = size
        self.allowed = allowed


class RunBudget:
    """One run's allowance; ``admit`` is the ``FrameBuffer``'s header check."""

    def __init__(self, limits: ResourceLimits,
                 on_discard: Callable[[int], Any] | None = None) -> None:
        self.event_bytes_left = 2 * limits.max_output_bytes + EVENT_SLACK
        self.result_max = 2 * limits.max_output_bytes + RESULT_SLACK
        self.results_left = MAX_RESULT_FRAMES
        self.controls_left = MAX_CONTROL_EVENTS
        self.frames = 0
        self.started = time.monotonic()
        self.last_size = 0
        self.discarded = 0
        self.on_discard = on_discard

    def admit(self, size: int, event: bool) -> bool:
        """True: decode the frame; False: drop it undecoded. Raises on abuse."""
        self.frames += 1
        if self.frames > FRAME_BASE and self.frames > FRAME_BASE + FRAME_RATE * (
                time.monotonic() - self.started):
            raise BudgetExceeded(f"the sandbox sent more than {self.frames - 1} frames in "
                                 f"{time.monotonic() - self.started:.1f} s (a flood)")
        self.last_size = size
        if not event:
            self.results_left -= 1
            if self.results_left < 0:
                raise BudgetExceeded("the sandbox sent more result frames than a run has")
            if size > self.result_max:
                raise ResultTooLarge(size, self.result_max)
            return True
        if size <= self.event_bytes_left:
            self.event_bytes_left -= size
            return True
        if size <= SMALL_EVENT:
            return True
        self.discarded += 1
        self.event_bytes_left = 0
        if self.on_discard is not None:
            self.on_discard(size)
        return False

    def control(self) -> None:
        """Count one control event (not cut by the output cap); raises past the budget."""
        self.controls_left -= 1
        if self.controls_left < 0:
            raise BudgetExceeded(f"the sandbox sent more than {MAX_CONTROL_EVENTS} control "
                                 "events (input requests) in one run")
