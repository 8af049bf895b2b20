"""The cgroup v2 controller files a unit writes and reads, against a fake cgroupfs directory.

This host's cgroup2 has no memory, cpu or pids controller, so these writes cannot happen for
real here (tests/sandbox/test_cgroup_v2.py runs the v2 core for real). What is checked: which
file gets which value, what is skipped when the subtree does not offer it, and how the
supervisor reads OOM kills, peak memory and CPU time."""

from __future__ import annotations

from pathlib import Path

import pytest

from agenticraft.jail.confine import cgroups
from agenticraft.sandbox.unit import CgroupV2Unit

MB = 1024 * 1024


def fake_group(path: Path, controllers: str, procs: str = "") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "cgroup.controllers").write_text(controllers + "\n")
    (path / "cgroup.procs").write_text(procs)
    (path / "cgroup.subtree_control").write_text("")
    return path


def info_for(group: Path, controllers: list[str]) -> dict:
    return {"available": True, "version": 2, "delegated": str(group),
            "bases": {"unified": str(group / cgroups.UNITS)}, "controllers": controllers,
            "freeze": True, "kill": True}


def test_place_writes_every_offered_limit(tmp_path, monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    group = fake_group(tmp_path / "deleg", "memory cpu pids")
    layout = cgroups.layout(info_for(group, ["memory", "cpu", "pids"]), limits=True, pids=True)
    assert layout is not None and layout.caps == {"memory", "cpu", "pids", "cpuacct",
                                                  "freezer", "kill"}
    unit = layout.paths("7-8")["unified"]
    unit.mkdir(parents=True)
    (unit / "memory.swap.max").write_text("max")
    cgroups.place(layout, "7-8", memory_mb=512, cpu_percent=25, max_processes=35)
    assert (unit / "memory.max").read_text() == str(512 * MB)
    assert (unit / "memory.swap.max").read_text() == "0"
    assert (unit / "cpu.max").read_text() == f"250000 {cgroups.CFS_PERIOD_US}"
    assert (unit / "pids.max").read_text() == "35"
    assert (unit / "cgroup.procs").read_text() == "0"  # joined


def test_only_what_the_subtree_offers(tmp_path):
    group = fake_group(tmp_path / "deleg", "pids")
    layout = cgroups.layout(info_for(group, ["pids"]), limits=True, pids=True)
    unit = layout.paths("7-9")["unified"]
    cgroups.place(layout, "7-9", memory_mb=512, cpu_percent=400, max_processes=10)
    assert not (unit / "memory.max").exists() and not (unit / "cpu.max").exists()
    assert not (unit / "memory.swap.max").exists()  # no swap accounting: skipped, not created
    assert (unit / "pids.max").read_text() == "10"
    no_pids = cgroups.layout(info_for(group, ["pids"]), limits=True, pids=False)
    assert "pids" not in no_pids.caps


def test_unlimited_cpu_is_max(tmp_path, monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    writes = cgroups.limit_writes(2, {"cpu"}, memory_mb=1, cpu_percent=200, max_processes=1)
    assert writes == [("cpu", "cpu.max", f"max {cgroups.CFS_PERIOD_US}")]


def test_prepare_moves_processes_to_a_leaf_then_enables_controllers(tmp_path, monkeypatch):
    monkeypatch.setattr(cgroups, "v2_mount", lambda: tmp_path)
    group = fake_group(tmp_path / "deleg", "memory pids", procs="101\n")
    out = cgroups.prepare_v2(info_for(group, ["memory", "pids"]))
    assert (group / cgroups.PARENT_LEAF / "cgroup.procs").read_text() == "101"
    # (a fake file keeps only the last write; the kernel's keeps each enabled controller)
    assert (group / "cgroup.subtree_control").read_text() == "+pids"
    assert (group / cgroups.UNITS / "cgroup.subtree_control").read_text() == "+pids"
    assert out["controllers"] == ["memory", "pids"]
    assert "controllers: memory, pids" in out["detail"]


def test_supervisor_reads_v2_accounting(tmp_path):
    path = tmp_path / "unit"
    path.mkdir()
    (path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n")
    (path / "cpu.stat").write_text("usage_usec 1500000\nuser_usec 1000000\n")
    (path / "memory.current").write_text(str(300 * MB))
    (path / "memory.peak").write_text(str(400 * MB))
    (path / "cgroup.procs").write_text("11\n12\n")
    unit = CgroupV2Unit(1, {"unified": path}, frozenset({"memory", "cpuacct", "pids"}))
    assert unit.oom_kills() == 2
    assert unit.cpu_seconds() == pytest.approx(1.5)
    assert unit.memory_bytes() == 300 * MB
    assert unit.memory_peak_mb() == pytest.approx(400)
    assert unit.members() == [11, 12]
    unit.set_limits(512, 100.0, 31)
    assert (path / "memory.max").read_text() == str(512 * MB)
    assert (path / "pids.max").read_text() == "32"
    assert unit.memory_limited
    # tightening below the usage would make the kernel OOM-kill the session: refused instead
    unit.set_limits(256, 100.0, 31)
    assert (path / "memory.max").read_text() == str(512 * MB)
    assert not unit.memory_limited
    unit.remove()
