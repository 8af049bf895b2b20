"""A session's runner forked ahead copies, while idle, the pages the runner before it wrote
(jail/prefault.py): the next run then takes no copy-on-write fault on them. Run in forked
processes as the worker's runners are: a measuring runner, then the runner forked from it."""

from __future__ import annotations

import ctypes
import gc
import mmap
import os
import resource
import socket
import struct

import pytest

from agenticraft.jail import prefault

#: Enough pages that the interpreter's own few faults while counting (7 seen late in full runs,
#: where the heap the forks share with the test process is large) stay well within the bounds.
PAGES = 256


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _touch(region: mmap.mmap, first: int, count: int) -> None:
    for page in range(first, first + count):
        region[page * prefault.PAGE] = (region[page * prefault.PAGE] + 1) % 256


def _in_child(body, *args) -> tuple[int, ...]:
    """Run ``body`` in a forked child (a runner's checkpoint stays its parent); its result."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        # No collection in these forks: one walks the test process's objects and adds faults
        # (or written pages) of its own.
        gc.disable()
        try:
            values = body(*args)
            os.write(write, struct.pack(f"{len(values)}q", *values))
        finally:
            os._exit(0)
    os.close(write)
    data = os.read(read, 64)
    os.close(read)
    os.waitpid(pid, 0)
    return struct.unpack(f"{len(data) // 8}q", data)


def _two_runners(chan: socket.socket) -> tuple[int, ...]:
    region = mmap.mmap(-1, 3 * PAGES * prefault.PAGE,
                       flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    _touch(region, 0, 3 * PAGES)  # present before the first runner is forked
    learner = prefault.Learner()

    def first_runner() -> tuple[int, ...]:
        learner.begin(None, chan)  # the first runner measures
        assert learner.start is not None
        _touch(region, 0, PAGES)  # its run writes the first PAGES pages
        written = learner.written()
        return _in_child(second_runner, written)

    def second_runner(written: prefault.Snapshot | None) -> tuple[int, ...]:
        learner.begin(written, chan)  # learns, then copies the plan while idle
        before = _faults()
        _touch(region, 0, PAGES)  # the same pages as the run before: copied ahead
        learned = _faults() - before
        before = _faults()
        _touch(region, PAGES, PAGES)  # pages no run wrote before: a fault each
        fresh = _faults() - before
        return learned, fresh, len(learner.plan)

    return _in_child(first_runner)


def test_the_pages_the_last_run_wrote_are_copied_before_the_next_run() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        learned, fresh, ranges = _in_child(_two_runners, ours)
    assert ranges >= 1
    assert fresh >= PAGES * 9 // 10  # the control: these still fault
    assert learned <= PAGES // 10  # without the copy ahead: PAGES faults


def test_a_waiting_request_stops_the_copy_at_once() -> None:
    region = mmap.mmap(-1, PAGES * prefault.PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    _touch(region, 0, PAGES)
    plan = [(ctypes.addressof(ctypes.c_char.from_buffer(region)), prefault.PAGE)]
    ours, theirs = socket.socketpair()
    with ours, theirs:
        assert prefault.copy_ahead(plan, ours) == 1
        theirs.send(b"run")
        assert prefault.copy_ahead(plan, ours) == 0


def test_a_run_that_wrote_too_much_is_not_copied_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory: the copy costs what the next run would copy anyway, within MAX_PAGES."""
    monkeypatch.setattr(prefault, "MAX_PAGES", 4)
    written: prefault.Snapshot = [(1000, b"\x01" * 8)]
    start: prefault.Snapshot = [(1000, b"\x01" * 8)]
    assert prefault._intersect(written, start) is None
    monkeypatch.setattr(prefault, "MAX_PAGES", 8)
    page = prefault.PAGE
    assert prefault._intersect(written, start) == [(1000 * page, 8 * page)]
    # mappings that moved: only the pages both cover, in runs
    assert prefault._intersect([(1000, b"\x01\x01\x00\x01")], [(1001, b"\x01\x01\x01")]) == [
        (1001 * page, page), (1003 * page, page)]


def test_a_session_near_its_memory_limit_gets_no_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    copied: list[prefault.Plan] = []
    monkeypatch.setattr(prefault, "copy_ahead", lambda plan, chan: copied.append(plan) or 0)
    learner = prefault.Learner()
    learner.plan = [(0x10000, 256 * prefault.PAGE)]  # 1 MB with 4 KB pages
    learner.runs = 1
    learner.begin(None, None, memory_mb=8)  # type: ignore[arg-type]
    assert not copied  # over a sixteenth of 8 MB
    learner.begin(None, None, memory_mb=64)  # type: ignore[arg-type]
    assert copied == [learner.plan]


def test_a_blank_copies_the_pages_a_measuring_blank_wrote_and_unmaps_the_plan() -> None:
    """Blanks are siblings (each forked from the zygote): the first measures and leaves its
    plan in the shared mapping, the next copies it while it waits; both unmap it."""
    region = mmap.mmap(-1, 3 * PAGES * prefault.PAGE,
                       flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    _touch(region, 0, 3 * PAGES)  # the zygote's pages, present before any blank is forked
    plan = prefault.BlankPlan()
    wake_r, wake_w = os.pipe()  # a blank's profile pipe: nothing on it yet

    def measuring_blank() -> tuple[int, ...]:
        plan.begin(True, wake_r)
        _touch(region, 0, PAGES)  # its way to the sandbox writes the first PAGES pages
        plan.end()
        return (int(plan.map is None),)

    def next_blank() -> tuple[int, ...]:
        plan.begin(False, wake_r)  # copies while it waits
        before = _faults()
        _touch(region, 0, PAGES)
        learned = _faults() - before
        before = _faults()
        _touch(region, PAGES, PAGES)
        fresh = _faults() - before
        plan.end()
        return learned, fresh, int(plan.map is None)

    try:
        assert _in_child(measuring_blank) == (1,)
        learned, fresh, unmapped = _in_child(next_blank)
    finally:
        os.close(wake_r)
        os.close(wake_w)
    assert unmapped == 1
    assert fresh >= PAGES * 9 // 10  # the control: these still fault
    assert learned <= PAGES // 10  # without the copy ahead: PAGES faults
