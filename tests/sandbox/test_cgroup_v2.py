"""cgroup v2 accounting units in a delegated subtree, for real (issue 12).

An unprivileged user under systemd gets a v2 subtree delegated (Delegate=yes: the directory and
its cgroup.procs, cgroup.subtree_control and cgroup.threads belong to the user). Each scenario
runs in a child Python started inside such a subtree: as root this test makes one (marked
``trusted.delegate`` as systemd does, with ``AGENTICRAFT_DISABLE=cgroup_v1`` so that v2 is used
where v1 would win); unprivileged, the subtree this process already lives in is used (CI's
test-unprivileged.sh sets it up as systemd would, chowned to the CI user). Without either the
tests skip, unless AGENTICRAFT_EXPECT_CGROUP_V2=1 says they must run (CI).

What this host's v2 lacks (memory, cpu, pids controllers) is covered against a fake cgroupfs
in tests/jail/test_cgroups_v2_files.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agenticraft.jail.confine import cgroups

pytestmark = pytest.mark.timeout(180)
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def _remove_tree(path: Path) -> None:
    for sub in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            sub.rmdir()
    with contextlib.suppress(OSError):
        path.rmdir()


@pytest.fixture(scope="module")
def delegated() -> Iterator[tuple[Path, dict[str, str], int | None]]:
    """(delegated group, environment, group to start the child in)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE), str(ROOT)])}
    mount = cgroups.v2_mount()
    if os.geteuid() == 0 and mount is not None:
        group = mount / f"acs-test-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        group.mkdir()
        os.setxattr(group, "trusted.delegate", b"1")
        env["AGENTICRAFT_DISABLE"] = ",".join(
            [*filter(None, env.get("AGENTICRAFT_DISABLE", "").split(",")), "cgroup_v1"])
        try:
            yield group, env, os.open(group / "cgroup.procs", os.O_WRONLY)
        finally:
            _remove_tree(group)
        return
    info = cgroups.probe_v2()
    if not info.get("available"):
        if os.environ.get("AGENTICRAFT_EXPECT_CGROUP_V2") == "1":
            pytest.fail(f"no delegated cgroup v2 subtree: {info['detail']}")
        pytest.skip(f"no delegated cgroup v2 subtree for this user: {info['detail']}")
    yield Path(info["delegated"]), env, None


def run_scenario(delegated, name: str, tmp_path: Path, disable: str = "") -> dict:
    _group, env, procs_fd = delegated
    if disable:
        env = {**env, "AGENTICRAFT_DISABLE": ",".join(
            filter(None, [env.get("AGENTICRAFT_DISABLE", ""), disable]))}

    def enter() -> None:  # the child starts inside the delegated group
        if procs_fd is not None:
            os.write(procs_fd, b"0")

    proc = subprocess.run([sys.executable, str(HERE / "cgroup_v2_scenarios.py"), name,
                           str(tmp_path)], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=150, preexec_fn=enter, pass_fds=(
                              (procs_fd,) if procs_fd is not None else ()))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_session_children_and_threads_are_in_the_unit_and_die_with_it(delegated, tmp_path):
    group = delegated[0]
    out = run_scenario(delegated, "placement", tmp_path)
    mech = out["mechanisms"]
    assert mech["active"] and mech["version"] == 2, mech
    assert mech["delegated"] == str(group)
    # leaf-only rule: the supervisor and its zygote left the delegated group for our leaf
    assert out["supervisor_cgroup"].endswith("/agenticraft-parent"), out
    assert out["zygote_cgroup"].endswith("/agenticraft-parent"), out
    assert out["unit_class"] == "CgroupV2Unit"
    assert out["unit_path"].startswith(str(group / "agenticraft") + "/")
    unit_rel = out["worker_cgroup"]
    assert out["unit_path"].endswith(unit_rel), out
    assert out["kid_cgroups"] == [unit_rel]  # forked children are born in the unit
    assert out["kids_in_unit"] and out["runner_threads_in_unit"]
    assert out["n_threads"] >= 4
    assert out["cpu_seconds"] is not None  # cpu.stat: no controller needed
    assert "WRITTEN" not in out["escape_attempts"].values(), out["escape_attempts"]
    assert out["kill_writes_at_close"] == int(mech["kill"])  # one write killed the session
    assert out["still_in_unit"]
    assert out["kids_gone"] and out["named_gone"], "a session's child outlived close()"
    assert out["unit_empty_after_close"]
    assert out["unit_removed"], "the zygote left its unit behind"
    # what enforces what, exactly as this subtree offers it
    enforced = out["enforced"]
    assert "cgroup v2, frozen" in enforced["timeout_seconds"]
    assert ("cgroup.kill" in enforced["timeout_seconds"]) == mech["kill"]
    offered = set(mech["controllers"])
    assert ("memory.max" in enforced["memory_mb"]) == ("memory" in offered)
    if "memory" not in offered:
        assert enforced["memory_mb"].startswith("DEGRADED")
    assert ("cpu.max" in enforced["cpu_percent"]) == ("cpu" in offered)
    if "cpu" not in offered:
        assert "cgroup v2 cgroup.freeze" in enforced["cpu_percent"]
    assert ("cgroup v2 pids.max" in enforced["max_processes"]) == ("pids" in offered)


def test_landlock_alone_keeps_the_code_out_of_its_own_unit(delegated, tmp_path):
    """Without the private root (where /sys does not exist), Landlock alone must refuse every
    write to the unit's files, which belong to the very user the code runs as."""
    out = run_scenario(delegated, "placement", tmp_path, disable="mounts")
    assert out["mechanisms"]["version"] == 2
    assert set(out["escape_attempts"].values()) == {"PermissionError"}, out["escape_attempts"]
    assert out["still_in_unit"] and out["kids_gone"] and out["unit_empty_after_close"]


def test_timeout_kills_the_whole_unit(delegated, tmp_path):
    out = run_scenario(delegated, "timeout", tmp_path)
    assert out["raised"] == "timeout_seconds"
    assert out["kill_writes_at_timeout"] >= 1  # the run's unit killed by cgroup.kill
    assert out["spinners_gone"], "children of a timed-out run survived"
    assert out["session_raised"] == "timeout_seconds"
    assert out["session_spinners_gone"] and out["session_alive"]
    assert out["session_runner_gone"] and out["session_unit_empty"]


def test_freeze_stops_every_process_of_the_unit(delegated, tmp_path):
    out = run_scenario(delegated, "freeze", tmp_path)
    assert out["spinners"] >= 3  # the runner (with its thread) and two children
    assert out["frozen_flag"]
    assert out["cpu_while_frozen"] < 0.02, out
    assert out["cpu_after_thaw"] > 0.1, out
    assert out["all_gone"]
    # 10 % of 4 s is 0.4 s for the whole unit; children cannot wake a frozen spinner
    assert out["freezes_while_throttled"] > 2, out  # the duty cycle froze the whole unit
    assert out["throttled_cpu"] < 0.8, out
    assert out["throttled_unit_cpu"] < 1.0, out


def test_leftover_units_are_reaped(delegated, tmp_path):
    out = run_scenario(delegated, "reap", tmp_path)
    assert out["stale_removed"] and out["reported"], out
