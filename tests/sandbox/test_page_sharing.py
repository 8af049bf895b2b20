"""Opt-in page sharing between sandboxes (``AGENTICRAFT_SHARE_PAGES=1``, jail/confine/pages.py).

Off by default: each zygote has its own address-space layout and hash seed, and nothing is
offered to the kernel's same-page merging. On: every sandbox has the same layout and hash seed,
and its memory is mergeable (KSM), so identical pages of all kernels can be kept once. The
host's own processes never change.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agenticraft.jail.confine.pages import ADDR_NO_RANDOMIZE
from agenticraft.sandbox.host_report import SHARE_PAGES_ENV, page_sharing
from agenticraft.security import SecurityContext

from helpers import make_manager

pytestmark = pytest.mark.timeout(120)

# Seen from inside (the host may not read a confined worker's /proc files unprivileged): the
# hash seed, where libc was mapped (randomised or not) and the mergeable mark.
PROBE = """
h = hash('agenticraft')
where = next(line.split('-')[0] for line in open('/proc/self/maps') if 'libc.so' in line)
mergeable = any(' mg' in ' ' + line[8:] for line in open('/proc/self/smaps')
                if line.startswith('VmFlags:'))
"""


def _personality(pid: int) -> int:
    return int(Path(f"/proc/{pid}/personality").read_text(), 16)


async def _one(tmp: Path) -> tuple[int, str, int, bool]:
    """(hash of a string, where libc is mapped, zygote personality, worker memory mergeable) of a
    new process sandbox (its own zygote)."""
    from agenticraft.sandbox.process import ProcessSandbox

    sandbox = ProcessSandbox(make_manager(tmp))
    try:
        async with sandbox.session(SecurityContext("student")) as session:
            seen = await session.run(PROBE)
            zygote = sandbox.supervisor.zygote.proc.pid
            return seen["h"], seen["where"], _personality(zygote), seen["mergeable"]
    finally:
        await sandbox.close()


async def test_sandboxes_share_nothing_by_default(tmp_path, monkeypatch):
    monkeypatch.delenv(SHARE_PAGES_ENV, raising=False)
    first = await _one(tmp_path / "a")
    second = await _one(tmp_path / "b")
    assert first[0] != second[0]  # own hash seeds
    assert first[1] != second[1]  # own layouts
    for _, _, zygote, mergeable in (first, second):
        assert not zygote & ADDR_NO_RANDOMIZE
        assert not mergeable
    assert page_sharing(False).startswith("not shared")


async def test_shared_pages_give_every_sandbox_one_layout_and_mergeable_memory(
        tmp_path, monkeypatch):
    monkeypatch.setenv(SHARE_PAGES_ENV, "1")
    first = await _one(tmp_path / "a")
    second = await _one(tmp_path / "b")
    assert first[0] == second[0]  # one hash seed: the same heap contents
    assert first[1] == second[1]  # one layout (the workers inherit the zygote's personality)
    line = page_sharing(True)
    for _, _, zygote, mergeable in (first, second):
        assert zygote & ADDR_NO_RANDOMIZE
        if "PR_SET_MEMORY_MERGE" in line and "NOT AVAILABLE" in line:
            assert not mergeable  # an older kernel: said so, nothing claimed
        else:
            assert mergeable
    assert not _personality(os.getpid()) & ADDR_NO_RANDOMIZE  # the host's process keeps ASLR
