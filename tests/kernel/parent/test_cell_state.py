"""The kernel's per-cell state: where an interrupt goes in each phase of a cell."""

from __future__ import annotations

import asyncio

from agenticraft_kernel.parent.cell_state import CellState


def make() -> tuple[CellState, list[str]]:
    sent: list[str] = []
    return CellState(lambda: sent.append("interrupt")), sent


def test_interrupt_while_waiting_is_delivered_when_the_cell_starts() -> None:
    state, sent = make()
    state.waiting()
    state.interrupt()
    assert sent == [] and state.input_cancel.is_set()
    state.started()
    assert sent == ["interrupt"]


def test_interrupt_while_running_reaches_the_session_and_idle_ignores_it() -> None:
    state, sent = make()
    state.waiting()
    state.started()
    state.interrupt()
    assert sent == ["interrupt"]
    state.idle()
    state.interrupt()
    assert sent == ["interrupt"]


def test_input_waits_end_with_the_session_run() -> None:
    state, _ = make()
    state.session_run()
    assert not state.input_cancel.is_set()
    state.session_done()
    assert state.input_cancel.is_set()


def test_a_fresh_sandbox_run_is_cancelled_even_by_an_early_interrupt() -> None:
    async def scenario() -> tuple[bool, bool, list[str]]:
        state, sent = make()
        loop = asyncio.get_running_loop()
        state.waiting()
        state.interrupt()  # came while the cell was being prepared
        early: asyncio.Future[None] = loop.create_future()
        state.fresh_run(early)
        state.idle()
        state.waiting()
        late: asyncio.Future[None] = loop.create_future()
        state.fresh_run(late)
        state.interrupt()
        return early.cancelled(), late.cancelled(), sent

    early, late, sent = asyncio.run(scenario())
    assert early and late and sent == []  # the session itself is never interrupted
