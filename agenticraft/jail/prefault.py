"""Copy ahead, in a session's runner forked ahead of time, the pages its run will write.

Why: a runner shares every page with its checkpoint (it is a fork); each page its run writes is
copied at the first write (a copy-on-write fault, ~4.5 us here). IPython's way into a cell
writes ~850 such pages before the cell's own code starts: most of a ``1+1`` cell's time. The
pages a run writes are nearly the same every run (the interpreter's and the shell's own state),
so a runner learns which pages it wrote, and the next runner, forked ahead while the user reads
the output, copies them at once (madvise MADV_POPULATE_WRITE, Linux >= 5.14: the copy without
changing a byte), idle, off the run's path. It stops as soon as a request is waiting.

Learned how: /proc/self/pagemap says per page "present" (bit 63) and "mapped only here" (bit
56). A page present when the runner was forked (every such page is shared then) and mapped only
by the runner at its end was written by it (or copied ahead). Pages that appeared during the run
are left out: a new array is copied by the next runner only if that one writes it.

Bounds (memory: the checkpoint keeps the originals, as for every page a run writes): a set of
more than ``MAX_PAGES`` is not copied (that run pays its faults and is measured afresh); mappings
larger than ``MAX_MAPPING_PAGES`` (data, not the interpreter) are not looked at; every
``RELEARN``-th runner copies nothing, so the set follows what runs write now rather than growing
with everything once copied. A host without pagemap or the madvise call: nothing is copied.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import re
import select
import socket
import struct

from agenticraft.jail.confine.libc import populate_write

PAGE = os.sysconf("SC_PAGE_SIZE")
MAX_PAGES = 4096
MAX_MAPPING_PAGES = 1 << 16
RELEARN = 16
_CHECK_EVERY = 16  # ranges copied between two looks at the channel

#: pagemap entries are 8 bytes, little-endian: byte 7 holds bit 63 (present) as 0x80 and bit 56
#: (exclusively mapped) as 0x01. Tables map that byte to 1/0.
_PRESENT = bytes(1 if b & 0x80 else 0 for b in range(256))
_WRITTEN = bytes(1 if b & 0x81 == 0x81 else 0 for b in range(256))
_RUNS = re.compile(rb"[^\x00]+")

Snapshot = list[tuple[int, bytes]]  # (first page number, one 0/1 byte per page) per mapping
Plan = list[tuple[int, int]]  # (address, length) ranges to copy


class Learner:
    """One per worker process; a runner forked ahead inherits it from the runner before it.

    Most runners only copy the ranges learned earlier (no pagemap read: ~3 ms each way here);
    every ``RELEARN``-th runner copies nothing and measures instead (what was present when it
    was forked, what it wrote by its end), and the runner after it learns from that."""

    def __init__(self) -> None:
        self.plan: Plan = []  # the ranges to copy ahead
        self.start: Snapshot | None = None  # a measuring runner's pages when it was forked
        self.runs = 0

    def written(self) -> Snapshot | None:
        """In a runner whose run was kept, just before it forks the next runner: if it was
        measuring, its pages mapped only here (the next runner works out the rest)."""
        if self.start is None:
            return None
        try:
            return _scan(_WRITTEN)
        except OSError:
            return None

    def begin(self, written: Snapshot | None, chan: socket.socket, memory_mb: float = 0) -> None:
        """In a runner just forked ahead of time, idle (off the run's path): learn from the
        runner before it if that one measured; then measure, or copy the plan until a request
        is waiting on ``chan``. ``memory_mb``: the session's memory limit (0: none known); a
        plan over a sixteenth of it is not copied (a session near its limit is not pushed
        over it by a copy made before the run)."""
        before, self.start = self.start, None
        if written is not None and before is not None:
            self.plan = _intersect(written, before) or []
        self.runs += 1
        if self.runs % RELEARN == 1 or not self.plan:
            with contextlib.suppress(OSError):
                self.start = _scan(_PRESENT)
        elif not memory_mb or _size(self.plan) <= memory_mb * 1024 * 1024 / 16:
            copy_ahead(self.plan, chan)

    def forget(self) -> None:
        """In a runner forked when its run came (not ahead): it measures nothing."""
        self.start = None


def copy_ahead(plan: Plan, chan: socket.socket | int) -> int:
    """Copy the ranges; stop at the first sign of a waiting request (or of a kernel without
    the call). Returns the pages copied."""
    copied = 0
    for i, (address, length) in enumerate(plan):
        if i % _CHECK_EVERY == 0 and select.select([chan], [], [], 0)[0]:
            break
        err = populate_write(address, length)
        if err == 0:
            copied += length // PAGE
        elif err not in (12, 14):  # ENOMEM, EFAULT: that range went away; others: give up
            break
    return copied


def _size(plan: Plan) -> int:
    return sum(length for _, length in plan)


def _mappings() -> list[tuple[int, int]]:
    """Page ranges of the writable private mappings (the heap, arenas, stacks, data)."""
    found = []
    with open("/proc/self/maps", "rb") as maps:
        for line in maps:
            fields = line.split()
            perms = fields[1] if len(fields) > 1 else b""
            if perms[:2] != b"rw" or perms[3:4] != b"p":
                continue
            if len(fields) > 5 and fields[5].startswith(b"[v"):  # vvar, vsyscall
                continue
            low, high = (int(x, 16) // PAGE for x in fields[0].split(b"-"))
            if high - low <= MAX_MAPPING_PAGES:
                found.append((low, high))
    return found


def _scan(table: bytes) -> Snapshot:
    fd = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
    try:
        return [(low, os.pread(fd, (high - low) * 8, low * 8)[7::8].translate(table))
                for low, high in _mappings()]
    finally:
        os.close(fd)


def _intersect(written: Snapshot, start: Snapshot) -> Plan | None:
    """Ranges of pages set in both (mappings may have grown, split or merged meanwhile; both
    lists are in address order). None: more than ``MAX_PAGES``."""
    plan: Plan = []
    total = 0
    i = j = 0
    while i < len(written) and j < len(start):
        w_low, w_bits = written[i]
        s_low, s_bits = start[j]
        w_high, s_high = w_low + len(w_bits), s_low + len(s_bits)
        low, high = max(w_low, s_low), min(w_high, s_high)
        if low < high:
            both = (int.from_bytes(w_bits[low - w_low:high - w_low], "little")
                    & int.from_bytes(s_bits[low - s_low:high - s_low], "little"))
            if both:
                for run in _RUNS.finditer(both.to_bytes(high - low, "little")):
                    plan.append(((low + run.start()) * PAGE, (run.end() - run.start()) * PAGE))
                    total += run.end() - run.start()
                if total > MAX_PAGES:
                    return None
        if w_high <= s_high:
            i += 1
        else:
            j += 1
    return plan


class BlankPlan:
    """The same for the zygote's blank children prepared ahead (``apply.prepare``): the pages
    a worker writes between its profile's arrival and its first frame (~440 here, ~2 ms of
    faults) are nearly the same for every worker, so a blank copies them while it waits.

    Blanks are forked from the zygote, never from each other, so what one learned travels in a
    small shared mapping the zygote makes once (``MAP_SHARED``, inherited by every blank): a
    measuring blank (the first, then every ``RELEARN``-th) writes its plan there at the end of
    its confinement, every other one reads it while it waits. Every worker unmaps it before
    anything of the sandbox runs (``close``), so no sandbox can read or write it; a plan torn
    by a concurrent write only makes a blank copy pages of its own (bounded: ``MAX_PAGES``)."""

    SIZE = 1 << 16
    _HEAD = struct.Struct("<I")
    _RANGE = struct.Struct("<QQ")

    def __init__(self) -> None:
        self.map: mmap.mmap | None = mmap.mmap(-1, self.SIZE)  # shared, anonymous
        self.start: Snapshot | None = None

    def begin(self, measure: bool, wake: int, memory_mb: float = 0) -> None:
        """In a blank, waiting for its profile on ``wake``: measure (the pages present now), or
        copy the plan learned last, until the profile arrives. ``memory_mb``: the limit its
        unit will most likely get; a plan over a sixteenth of it is not copied."""
        plan = [] if measure else self._read()
        if not plan:
            with contextlib.suppress(OSError):
                self.start = _scan(_PRESENT)
        elif not memory_mb or _size(plan) <= memory_mb * 1024 * 1024 / 16:
            copy_ahead(plan, wake)

    def end(self) -> None:
        """In the worker, confined, before anything of the sandbox runs: a measuring blank
        leaves its plan for the next ones; then the shared mapping is unmapped."""
        if self.start is not None and self.map is not None:
            with contextlib.suppress(OSError):
                self._write(_intersect(_scan(_WRITTEN), self.start) or [])
        self.close()

    def close(self) -> None:
        self.start = None
        if self.map is not None:
            self.map.close()
            self.map = None

    def _read(self) -> Plan:
        if self.map is None:
            return []
        count = min(self._HEAD.unpack_from(self.map, 0)[0],
                    (self.SIZE - self._HEAD.size) // self._RANGE.size)
        plan = [self._RANGE.unpack_from(self.map, self._HEAD.size + i * self._RANGE.size)
                for i in range(count)]
        return plan if _size(plan) <= MAX_PAGES * PAGE else []

    def _write(self, plan: Plan) -> None:
        assert self.map is not None
        plan = plan[:(self.SIZE - self._HEAD.size) // self._RANGE.size]
        self._HEAD.pack_into(self.map, 0, 0)  # readers meanwhile see no plan
        for i, (address, length) in enumerate(plan):
            self._RANGE.pack_into(self.map, self._HEAD.size + i * self._RANGE.size,
                                  address, length)
        self._HEAD.pack_into(self.map, 0, len(plan))
