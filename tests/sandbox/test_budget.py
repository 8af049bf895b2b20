"""A run's frame budget (issue 13): what the host decodes is bounded before it decodes it."""

from __future__ import annotations

import pytest

from agenticraft.sandbox import budget as budget_module
from agenticraft.sandbox.budget import BudgetExceeded, ResultTooLarge, RunBudget
from agenticraft.wire.limits import ResourceLimits

LIMITS = ResourceLimits(max_output_bytes=10_000)


def test_event_bytes_past_the_allowance_are_discarded_and_reported() -> None:
    discarded: list[int] = []
    budget = RunBudget(LIMITS, on_discard=discarded.append)
    allowance = 2 * 10_000 + budget_module.EVENT_SLACK
    assert budget.admit(allowance - 10, True)
    assert not budget.admit(50_000, True)
    assert discarded == [50_000]
    # small events still pass once the allowance is used up: input() and comms keep working
    assert budget.admit(100, True)
    assert not budget.admit(budget_module.SMALL_EVENT + 1, True)


def test_a_result_over_the_output_allowance_is_refused() -> None:
    budget = RunBudget(LIMITS)
    assert budget.admit(1000, False)
    with pytest.raises(ResultTooLarge) as caught:
        budget.admit(2 * 10_000 + budget_module.RESULT_SLACK + 1, False)
    assert caught.value.allowed == 2 * 10_000 + budget_module.RESULT_SLACK


def test_too_many_result_frames_is_abuse() -> None:
    budget = RunBudget(LIMITS)
    for _ in range(budget_module.MAX_RESULT_FRAMES):
        budget.admit(10, False)
    with pytest.raises(BudgetExceeded):
        budget.admit(10, False)


def test_a_flood_of_frames_is_abuse() -> None:
    budget = RunBudget(LIMITS)
    for _ in range(budget_module.FRAME_BASE):
        budget.admit(10, True)
    with pytest.raises(BudgetExceeded, match="flood"):
        for _ in range(budget_module.FRAME_RATE):
            budget.admit(10, True)


def test_control_events_are_counted() -> None:
    budget = RunBudget(LIMITS)
    for _ in range(budget_module.MAX_CONTROL_EVENTS):
        budget.control()
    with pytest.raises(BudgetExceeded, match="control events"):
        budget.control()
