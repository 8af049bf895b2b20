"""Our code *inside* a container that someone else started (Enterprise Gateway's Docker process
proxies, a Kubernetes pod): with Docker's default seccomp profile and no capabilities, `doctor`
reports exactly what works there (namespaces do not: that profile refuses unshare) and the
process sandbox still runs code with the rest; with the project's seccomp profile the full
confinement is active."""

from __future__ import annotations

import json

import pytest

from agenticraft.sandbox.container import SECCOMP_PROFILE
from agenticraft.security.policy import default_container_image

pytestmark = pytest.mark.timeout(120)

PRELUDE = "import sys; sys.path.insert(0, '/opt/agenticraft'); "
PROJECT = ["seccomp=" + SECCOMP_PROFILE.read_text()]


def inside(engine, code: str, security: list[str], user: str = "10001:10001") -> str:
    """Run ``python3 -I -c PRELUDE+code`` in a fresh container the way a gateway would
    (non-root, no capabilities, no network, read-only root) and return its output."""
    out = engine.containers.run(
        default_container_image(), ["python3", "-I", "-c", PRELUDE + code], remove=True,
        network_mode="none", cap_drop=["ALL"], read_only=True, user=user,
        tmpfs={"/tmp": "size=64m"}, environment={"HOME": "/tmp", "XDG_STATE_HOME": "/tmp"},
        security_opt=["no-new-privileges:true", *security], working_dir="/tmp")
    return out.decode()


def doctor(engine, security: list[str]) -> dict:
    code = ("from agenticraft_kernel.__main__ import main; main(['doctor', '--json'])")
    return json.loads(inside(engine, code, security))


def test_doctor_with_dockers_default_seccomp_reports_no_namespaces(engine):
    report = doctor(engine, [])
    namespaces = report["mechanisms"]["namespaces"]
    assert namespaces["available"] is False
    assert "Operation not permitted" in namespaces["detail"]
    assert "network namespace" not in report["limits"]["network_access"]
    assert report["mechanisms"]["seccomp"]["active"]  # a filter can still be stacked


def test_doctor_with_the_project_profile_reports_full_confinement(engine):
    report = doctor(engine, PROJECT)
    for name in ("namespaces", "landlock", "seccomp", "rlimits"):
        assert report["mechanisms"][name]["active"], name
    assert report["limits"]["max_processes"].startswith("RLIMIT_NPROC counted in a private user")


@pytest.mark.parametrize("security", [[], PROJECT], ids=["docker-default", "project"])
def test_process_sandbox_runs_inside_a_container(engine, security):
    code = (
        "import asyncio, json\n"
        "from agenticraft.sandbox import SandboxManager\n"
        "from agenticraft.security import SecurityContext\n"
        "from agenticraft.wire.errors import ResourceLimitExceeded\n"
        "async def main():\n"
        "    async with SandboxManager() as m:\n"
        "        s = await m.get_sandbox('process')\n"
        "        r = await s.execute_code('result = sum([1, 2, 3])', SecurityContext('u'))\n"
        "        try:\n"
        "            await s.execute_code('while True: pass', SecurityContext(\n"
        "                'u', resource_limits={'timeout_seconds': 1}))\n"
        "            limit = None\n"
        "        except ResourceLimitExceeded as e:\n"
        "            limit = e.limit\n"
        "        print(json.dumps({'result': r['result'], 'limit': limit,\n"
        "                          'namespaces': s.supervisor.mechanisms['namespaces']['active'],\n"
        "                          'network': r.enforced['network_access']}))\n"
        "asyncio.run(main())\n")
    out = json.loads(inside(engine, code, security).strip().splitlines()[-1])
    assert out["result"] == 6 and out["limit"] == "timeout_seconds"
    assert out["namespaces"] is bool(security)
    assert ("network namespace" in out["network"]) is bool(security)


def test_kernels_sandbox_runs_as_a_uid_the_image_does_not_know(engine):
    """Gateways and clusters run containers as any uid (Enterprise Gateway's KERNEL_UID defaults
    to 1000, OpenShift picks one): with no passwd entry and no HOME in the zygote, a preloaded
    module that needs a home directory at import (parso, via jedi) must not stop the sandbox."""
    code = (
        "import asyncio\n"
        "from agenticraft.sandbox import SandboxManager\n"
        "from agenticraft.security import SecurityContext\n"
        "from agenticraft_kernel.parent.kernel_context import PRELOAD\n"
        "async def main():\n"
        "    async with SandboxManager(process_preload=PRELOAD) as m:\n"
        "        s = await m.get_sandbox('process')\n"
        "        r = await s.execute_code('import os, jedi\\nresult = os.getuid()',\n"
        "                                 SecurityContext('u'))\n"
        "        print(r['result'])\n"
        "asyncio.run(main())\n")
    out = inside(engine, code, [], user="23456:23456")
    assert out.strip().splitlines()[-1] == "23456", out
