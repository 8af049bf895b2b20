"""What each side of the gateway launch passes on: EG's launcher script gives the container only
the kernel's values and ceilings derived from KERNEL_* requests; the launcher inside turns the
KERNEL_* requests into the kernel's own limit requests."""

from __future__ import annotations

import pytest

from agenticraft_kernel.gateway import launch, launch_docker

EG_ENV = {"PATH": "/usr/bin", "EG_DOCKER_NETWORK": "net", "DOCKER_HOST": "unix:///x",
          "HOME": "/root", "KERNEL_USERNAME": "alice", "KERNEL_MEMORY_MB": "200",
          "KERNEL_TIMEOUT_SECONDS": "5", "AGENTICRAFT_DEFAULT_CPU_PERCENT": "20",
          "KERNEL_LAUNCH_TIMEOUT": "40", "SECRET_TOKEN": "x"}


def test_container_gets_only_the_kernels_values() -> None:
    env = launch_docker.container_env(EG_ENV, "kid", "0..0", "10.0.0.1:8877", "PUB")
    assert env == {"KERNEL_USERNAME": "alice", "KERNEL_MEMORY_MB": "200",
                   "KERNEL_TIMEOUT_SECONDS": "5", "AGENTICRAFT_DEFAULT_CPU_PERCENT": "20",
                   "KERNEL_ID": "kid", "PORT_RANGE": "0..0", "RESPONSE_ADDRESS": "10.0.0.1:8877",
                   "PUBLIC_KEY": "PUB", "HOME": "/tmp"}


def test_ceilings_leave_room_for_the_kernel_above_the_workers_limits() -> None:
    c = launch_docker.ceilings({"KERNEL_MEMORY_MB": "200", "KERNEL_MAX_PROCESSES": "10",
                                "KERNEL_CPU_PERCENT": "250", "KERNEL_MAX_FILE_SIZE_MB": "100"})
    assert c == {"memory_bytes": (200 + launch_docker.KERNEL_OVERHEAD_MB) << 20,
                 "pids": 10 + launch_docker.KERNEL_OVERHEAD_PIDS, "nano_cpus": 2_500_000_000,
                 "tmp_bytes": 400 << 20}
    defaults = launch_docker.ceilings({})
    assert defaults["memory_bytes"] == (512 + launch_docker.KERNEL_OVERHEAD_MB) << 20
    assert defaults["nano_cpus"] == 1_000_000_000  # the kernel itself keeps one CPU


@pytest.mark.parametrize("value", ["lots", "-1", "0"])
def test_bad_limit_request_stops_the_launch(value) -> None:
    with pytest.raises(SystemExit, match="KERNEL_MEMORY_MB"):
        launch_docker.ceilings({"KERNEL_MEMORY_MB": value})


def test_launch_refuses_a_kernel_id_that_is_not_one() -> None:
    with pytest.raises(SystemExit, match="not a kernel id"):
        launch_docker.launch("../x", "0..0", "a:1", "k", {"KERNEL_IMAGE": "img"})


def test_kernel_requests_become_the_kernels_limit_requests() -> None:
    assert launch.limit_requests(EG_ENV) == {"AGENTICRAFT_DEFAULT_MEMORY_MB": "200",
                                             "AGENTICRAFT_DEFAULT_TIMEOUT_SECONDS": "5"}


def test_kernel_argv_binds_every_address_for_egs_user() -> None:
    assert launch.kernel_argv(EG_ENV, "/tmp/k.json", None) == [
        "-f", "/tmp/k.json", "--ip=0.0.0.0", "--SecureKernel.user_id=alice"]
    argv = launch.kernel_argv({}, "/tmp/k.json", [1, 2, 3, 4, 5])
    assert argv[3:] == ["--shell=1", "--iopub=2", "--stdin=3", "--hb=4", "--control=5"]


def test_launcher_needs_egs_values() -> None:
    with pytest.raises(SystemExit, match="RESPONSE_ADDRESS, PUBLIC_KEY"):
        launch.main({"KERNEL_ID": "abc"})
    with pytest.raises(SystemExit, match="not a kernel id"):
        launch.main({"KERNEL_ID": "../etc", "RESPONSE_ADDRESS": "a:1", "PUBLIC_KEY": "k"})
