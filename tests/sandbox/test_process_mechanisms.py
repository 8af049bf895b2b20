"""Each confinement mechanism switched off: the report says so, and the rest still holds."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

import pytest

from agenticraft.sandbox import host_report as probe
from agenticraft.security import SecurityContext
from agenticraft.wire.errors import ResourceLimitExceeded
from agenticraft.wire.limits import LIMIT_NAMES

from helpers import make_manager, tcp_listener

pytestmark = pytest.mark.timeout(120)
ROOT = os.geteuid() == 0


@pytest.fixture
async def sandbox_without(request, tmp_path, monkeypatch):
    from agenticraft.sandbox.process import ProcessSandbox

    monkeypatch.setenv("AGENTICRAFT_DISABLE", request.param)
    sandbox = ProcessSandbox(make_manager(tmp_path))
    await sandbox.start()
    yield sandbox
    await sandbox.close()


async def run(sandbox, code, **limits):
    limits.setdefault("timeout_seconds", 3)
    return await sandbox.execute_code(code, SecurityContext("tester", resource_limits=limits))


def test_doctor_reports_every_limit():
    out = subprocess.run([sys.executable, "-m", "agenticraft_kernel", "doctor", "--json"],
                         capture_output=True, text=True, check=True).stdout
    report = json.loads(out)
    assert set(report["limits"]) == set(LIMIT_NAMES)
    assert set(report["network"]) == {"effective", "ceiling", "enforced_by", "in_container"}
    assert set(report["mechanisms"]) == set(probe.MECHANISMS)
    text = subprocess.run([sys.executable, "-m", "agenticraft_kernel", "doctor"],
                          capture_output=True, text=True, check=True).stdout
    assert "filesystem_access" in text and "Mechanisms:" in text


def test_doctor_says_how_deep_c_recursion_ends_in_the_restricted_sandbox():
    # a hard RLIMIT_STACK of 100 MB: the restricted zygote cannot reserve its stack room
    def low_stack_hard_limit() -> None:
        resource.setrlimit(resource.RLIMIT_STACK, (8 << 20, 100 << 20))

    text = subprocess.run([sys.executable, "-m", "agenticraft_kernel", "doctor"],
                          capture_output=True, text=True, check=True,
                          preexec_fn=low_stack_hard_limit).stdout
    line = next(row for row in text.splitlines() if row.strip().startswith("c_stack"))
    assert "DEGRADED" in line and "100 MB" in line
    assert "DEGRADED" not in probe.c_stack({"rlimits": {"stack_room_mb": 32 * 1024}})
    assert "DEGRADED" not in probe.c_stack({"rlimits": {"stack_room_mb": None}})  # unlimited


def test_report_marks_switched_off_mechanisms():
    full = probe.host_report(disabled=())
    off = probe.host_report(disabled=("landlock", "seccomp", "namespaces", "rlimits", "cgroups"))
    if full["mechanisms"]["landlock"]["available"]:
        assert "Landlock" in full["limits"]["filesystem_access"]
    assert off["limits"]["filesystem_access"].startswith("NOT ENFORCED")
    assert off["limits"]["network_access"].startswith("NOT ENFORCED")
    assert off["limits"]["memory_mb"].startswith("DEGRADED")
    assert off["mechanisms"]["landlock"]["disabled"] is True
    assert off["limits"]["timeout_seconds"].startswith("supervisor wall clock")
    assert "process group" in off["limits"]["timeout_seconds"]  # no cgroup: the group is the unit


def test_unknown_mechanism_name_is_rejected():
    from agenticraft.wire.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="valid"):
        probe.disabled_from_env({"AGENTICRAFT_DISABLE": "landlok"})


@pytest.mark.parametrize("sandbox_without", ["landlock"], indirect=True)
async def test_without_landlock(sandbox_without):
    result = await run(sandbox_without, "data = open('/etc/hostname').read()")
    if sandbox_without.supervisor.mechanisms["mounts"]["active"]:
        assert not result.success  # the private root holds without Landlock
        assert result.error.ename == "FileNotFoundError"
        assert result.enforced["filesystem_access"].startswith("private root")
        assert "Landlock" not in result.enforced["filesystem_access"]
    else:
        assert result.success  # honestly degraded: filesystem reads are no longer confined
        assert result.enforced["filesystem_access"].startswith("NOT ENFORCED")
    assert not (await run(sandbox_without, "import socket\nsocket.socket()")).success
    with pytest.raises(ResourceLimitExceeded):
        await run(sandbox_without, "while True:\n    pass", timeout_seconds=1)


@pytest.mark.parametrize("sandbox_without", ["seccomp"], indirect=True)
async def test_without_seccomp(sandbox_without):
    with tcp_listener() as (_listener, port):
        result = await run(sandbox_without,
                           f"import socket\ns = socket.socket()\n"
                           f"s.connect(('127.0.0.1', {port}))")
        assert not result.success  # the network namespace and Landlock TCP still hold
        assert "seccomp" not in result.enforced["network_access"]
    assert not (await run(sandbox_without, "open('/etc/shadow').read()")).success


@pytest.mark.parametrize("sandbox_without", ["namespaces"], indirect=True)
async def test_without_namespaces(sandbox_without):
    result = await run(sandbox_without, "import socket\nsocket.socket()")
    assert not result.success  # seccomp still refuses non-AF_UNIX sockets
    assert "network namespace" not in result.enforced["network_access"]


@pytest.mark.parametrize("sandbox_without", ["rlimits"], indirect=True)
async def test_without_rlimits(sandbox_without):
    with pytest.raises(ResourceLimitExceeded) as info:
        await run(sandbox_without,
                  "blocks = []\nwhile True:\n    blocks.append(bytearray(8 * 1024 * 1024))",
                  memory_mb=128, timeout_seconds=20)
    assert info.value.limit == "memory_mb"  # the supervisor's RSS watchdog caught it


@pytest.mark.parametrize("sandbox_without", ["landlock,seccomp,namespaces,rlimits,pids_cgroup"],
                         indirect=True)
async def test_with_everything_off_timeouts_and_output_caps_hold(sandbox_without):
    result = await run(sandbox_without, "x = 1")
    assert all(not v.startswith("NOT") for k, v in result.enforced.items()
               if k in ("timeout_seconds", "max_output_bytes"))
    assert result.enforced["network_access"].startswith("NOT ENFORCED")
    with pytest.raises(ResourceLimitExceeded):
        await run(sandbox_without, "while True:\n    pass", timeout_seconds=1)
    flood = await run(sandbox_without, "print('y' * 50000)", max_output_bytes=1000)
    assert flood.truncated


@pytest.mark.parametrize("sandbox_without", ["mounts"], indirect=True)
async def test_without_private_root(sandbox_without):
    """The private root off: Landlock still refuses host files, and the report says what holds."""
    assert not sandbox_without.supervisor.mechanisms["mounts"]["active"]
    result = await run(sandbox_without, "data = open('/etc/hostname').read()")
    if sandbox_without.supervisor.mechanisms["landlock"]["active"]:
        assert not result.success and result.error.ename == "PermissionError"
    assert "private root" not in result.enforced["filesystem_access"]
    assert "watchdog" in result.enforced["max_file_size_mb"]  # no kernel-enforced total


def test_private_root_probe_builds_what_a_worker_builds():
    """doctor's answer for the private root comes from building one, as a worker does."""
    from agenticraft.jail.confine import mounts

    reported = probe.mechanisms()["mounts"]
    without_pid, with_pid = mounts._probe_in_child(pid=False), mounts._probe_in_child(pid=True)
    assert (without_pid[0] == "1") == reported["available"]
    assert (with_pid[0] == "1") == reported["pid_namespace"]
    # A writable directory becomes an overlay on the quota tmpfs, or doctor says it cannot.
    assert (without_pid == "1overlay") == reported["overlay"]
    if reported["available"]:
        assert "switch_root" in reported["detail"]
        assert ("writable working directory is an overlay" in reported["detail"]) == reported[
            "overlay"]
    else:
        assert reported["detail"].startswith("a private root cannot be built here")
