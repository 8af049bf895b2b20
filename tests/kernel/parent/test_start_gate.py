"""The start gate: at most ``slots`` kernels of a user start their sandbox at once (200 kernels
started together on two cores: most zygotes missed their 30 s to answer without it)."""

from __future__ import annotations

import asyncio
import fcntl
import os
from pathlib import Path

import pytest

from agenticraft_kernel.parent.start_gate import StartGate


def held(directory: Path, index: int) -> bool:
    """True when another open file holds the slot's lock (as another kernel would see it)."""
    fd = os.open(directory / f"slot-{index}.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_a_start_waits_while_every_slot_is_taken(tmp_path: Path) -> None:
    gate = StartGate(2, tmp_path / "gate")

    async def main() -> None:
        first, second = gate.slot(), gate.slot()
        await first.__aenter__()
        await second.__aenter__()
        assert held(gate.directory, 0) and held(gate.directory, 1)
        entered = asyncio.Event()

        async def third() -> None:
            async with gate.slot():
                entered.set()

        waiting = asyncio.ensure_future(third())
        await asyncio.sleep(0.2)  # long enough to have entered, had it not been gated
        assert not entered.is_set()
        await second.__aexit__(None, None, None)  # one start is over: the waiting one goes
        await asyncio.wait_for(waiting, 10)
        assert entered.is_set()
        await first.__aexit__(None, None, None)
        async with gate.slot(), gate.slot():  # both free again (a slot the waiter got late
            pass                              # was let go)

    asyncio.run(main())


def test_a_free_slot_is_taken_at_once(tmp_path: Path) -> None:
    gate = StartGate(2, tmp_path / "gate")

    async def main() -> None:
        async with gate.slot():
            assert held(gate.directory, 0) != held(gate.directory, 1)  # exactly one
            async with gate.slot():
                assert held(gate.directory, 0) and held(gate.directory, 1)

    asyncio.run(asyncio.wait_for(main(), 10))


def test_cancelled_wait_leaves_no_slot_taken(tmp_path: Path) -> None:
    gate = StartGate(1, tmp_path / "gate")

    async def main() -> None:
        async with gate.slot():
            third = gate.slot()  # (kept: a dropped context manager would let its slot go)
            waiting = asyncio.ensure_future(third.__aenter__())
            await asyncio.sleep(0.05)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
        async with gate.slot():  # the cancelled waiter did not keep the slot it got later
            pass

    asyncio.run(asyncio.wait_for(main(), 10))


@pytest.mark.parametrize("release", [0, 1])
def test_the_first_slot_freed_goes_to_the_waiter(tmp_path: Path, release: int) -> None:
    """Whichever start ends first lets a waiting one go (not one slot chosen in advance)."""
    gate = StartGate(2, tmp_path / "gate")

    async def main() -> None:
        holders = [gate.slot(), gate.slot()]
        for holder in holders:
            await holder.__aenter__()
        third = gate.slot()  # (kept: a dropped context manager would let its slot go)
        waiting = asyncio.ensure_future(third.__aenter__())
        await holders[release].__aexit__(None, None, None)
        await asyncio.wait_for(waiting, 10)
        assert held(gate.directory, 0) and held(gate.directory, 1)

    asyncio.run(main())


@pytest.mark.parametrize("make", ["other_mode", "symlink"])
def test_a_directory_that_is_not_the_users_own_means_no_gate(tmp_path: Path, make: str) -> None:
    directory = tmp_path / "gate"
    if make == "other_mode":
        directory.mkdir(mode=0o777)
        directory.chmod(0o777)
    else:
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        directory.symlink_to(tmp_path / "elsewhere")
    gate = StartGate(1, directory)

    async def main() -> None:
        async with gate.slot(), gate.slot():  # not gated: both enter
            pass

    asyncio.run(asyncio.wait_for(main(), 10))
    assert not list((tmp_path / "elsewhere").glob("*")) if make == "symlink" else True


def test_no_slots_is_no_gate(tmp_path: Path) -> None:
    gate = StartGate(0, tmp_path / "gate")

    async def main() -> None:
        async with gate.slot(), gate.slot():
            pass

    asyncio.run(asyncio.wait_for(main(), 10))
    assert not (tmp_path / "gate").exists()
