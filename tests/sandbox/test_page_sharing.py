"""Opt-in page sharing between sandboxes (``AGENTICRAFT_SHARE_PAGES=1``, jail/confine/pages.py).

Off by default: each zygote has its own address-space layout and hash seed, and nothing is
offered to the kernel's same-page merging. On: every sandbox has the same layout and hash seed,
and its memory is mergeable (KSM), so identical pages of all kernels can be kept once. The
host's own processes never change.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from agenticraft.jail.confine.pages import ADDR_NO_RANDOMIZE
from agenticraft.sandbox.host_report import SHARE_PAGES_ENV, page_sharing
from agenticraft.security import SecurityContext

from helpers import make_manager

pytestmark = pytest.mark.timeout(120)

HASH = "h = hash('agenticraft')"


def _personality(pid: int) -> int:
    return int(Path(f"/proc/{pid}/personality").read_text(), 16)


def _mergeable(pid: int) -> bool:
    """Any mapping of ``pid`` marked mergeable ("mg" in its VmFlags)."""
    text = Path(f"/proc/{pid}/smaps").read_text()
    return any(" mg" in f" {flags}" for flags in re.findall(r"^VmFlags:(.*)$", text, re.M))


async def _one(tmp: Path) -> tuple[int, int, int, bool]:
    """(hash of a string, zygote personality, worker personality, worker mergeable) of a new
    process sandbox (its own zygote)."""
    from agenticraft.sandbox.process import ProcessSandbox

    sandbox = ProcessSandbox(make_manager(tmp))
    try:
        async with sandbox.session(SecurityContext("student")) as session:
            value = (await session.run(HASH))["h"]
            worker = session.handle.pid
            zygote = sandbox.supervisor.zygote.proc.pid
            return value, _personality(zygote), _personality(worker), _mergeable(worker)
    finally:
        await sandbox.close()


async def test_sandboxes_share_nothing_by_default(tmp_path, monkeypatch):
    monkeypatch.delenv(SHARE_PAGES_ENV, raising=False)
    first = await _one(tmp_path / "a")
    second = await _one(tmp_path / "b")
    assert first[0] != second[0]  # own hash seeds
    for _, zygote, worker, mergeable in (first, second):
        assert not zygote & ADDR_NO_RANDOMIZE and not worker & ADDR_NO_RANDOMIZE
        assert not mergeable
    assert page_sharing(False).startswith("not shared")


async def test_shared_pages_give_every_sandbox_one_layout_and_mergeable_memory(
        tmp_path, monkeypatch):
    monkeypatch.setenv(SHARE_PAGES_ENV, "1")
    first = await _one(tmp_path / "a")
    second = await _one(tmp_path / "b")
    assert first[0] == second[0]  # one hash seed: the same heap contents
    line = page_sharing(True)
    for _, zygote, worker, mergeable in (first, second):
        assert zygote & ADDR_NO_RANDOMIZE and worker & ADDR_NO_RANDOMIZE
        if "PR_SET_MEMORY_MERGE" in line and "NOT AVAILABLE" in line:
            assert not mergeable  # an older kernel: said so, nothing claimed
        else:
            assert mergeable
    assert not _personality(os.getpid()) & ADDR_NO_RANDOMIZE  # the host's process keeps ASLR
