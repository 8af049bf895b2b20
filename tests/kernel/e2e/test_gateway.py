"""Jupyter Enterprise Gateway, from its own virtualenv, launching the secure kernel through our
kernelspecs: a kernel created over EG's REST API with per-kernel ``KERNEL_*`` limits, cells over
EG's websocket, a limit hit and rolled back, an interrupt over EG's comm port, shutdown; the
container has the limits and hardening the kernelspec's launcher promises, and is gone
afterwards. Once with ``DockerProcessProxy`` (EG on the host, kernels on a bridge network), once
with ``DockerSwarmProcessProxy`` on a single-node swarm (EG in a container on the overlay
network, as EG is deployed in a swarm)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agenticraft.sandbox import container_engine
from agenticraft_kernel.gateway.launch_docker import KERNEL_OVERHEAD_MB, KERNEL_OVERHEAD_PIDS

from gateway_helpers import (
    KernelSocket,
    enterprise_gateway,
    enterprise_gateway_in_swarm,
    gateway_or_fail,
    kernel_network,
    overlay_network,
    rest,
    single_node_swarm,
    streams,
    wait_gone,
)

pytestmark = pytest.mark.timeout(420)

#: EG's default KERNEL_UID/GID (1000/100, "jovyan"), a uid the image does not know. Without a
#: private user namespace (Docker's default seccomp profile, the swarm case) RLIMIT_NPROC counts
#: every process of the uid on the node, so that kernel gets a uid of its own, as a deployment
#: would give each kernel (EG's KERNEL_UID).
EG_DEFAULT = (1000, 100)
OWN_UID = 20000 + os.getpid() % 10000
MEMORY = (200 + KERNEL_OVERHEAD_MB) << 20


def request(uid: int | None) -> dict[str, str]:
    ids = {} if uid is None else {"KERNEL_UID": str(uid), "KERNEL_GID": str(uid)}
    return {"KERNEL_USERNAME": "alice", "KERNEL_MEMORY_MB": "200", "KERNEL_MAX_PROCESSES": "24",
            **ids}


async def run_kernel(url: str, name: str, listed: Callable[[str], list],
                     check: Callable[[str], None], namespaces: bool, uid: int | None) -> None:
    """Create the kernel ``name`` over REST, exercise it over the websocket, shut it down and
    wait until ``listed(kernel_id)`` (its containers or services) is empty."""
    code, specs = await rest(url, "GET", "/api/kernelspecs")
    assert code == 200 and name in specs["kernelspecs"], specs
    started = time.monotonic()
    code, kernel = await rest(url, "POST", "/api/kernels", {"name": name, "env": request(uid)})
    assert code == 201, kernel
    print(f"\n{name}: kernel started over Enterprise Gateway in "
          f"{time.monotonic() - started:.2f} s")
    kernel_id = kernel["id"]
    try:
        check(kernel_id)
        ws = await KernelSocket.connect(url, kernel_id)
        try:
            reply, outputs = await ws.execute("import os\nkept = 41\nprint(os.getuid())")
            assert reply["status"] == "ok", outputs
            assert streams(outputs) == f"{EG_DEFAULT[0] if uid is None else uid}\n"
            # The kernel's context came from the KERNEL_* values: user alice, 200 MB.
            reply, outputs = await ws.execute("%secure_status")
            assert reply["status"] == "ok", outputs
            status = streams(outputs) + "".join(o.get("data", {}).get("text/plain", "")
                                                for o in outputs)
            assert "alice" in status and "200 MB" in status, status
            # What the container's seccomp profile allows, reported as it is: the project's
            # profile leaves the workers their network namespace, Docker's default does not.
            network_line = next(line for line in status.splitlines()
                                if line.startswith("network_access"))
            assert ("network namespace" in network_line) is namespaces, network_line
            reply, outputs = await ws.execute("kept = 0\nblob = bytearray(400 * 2**20)")
            assert reply["status"] == "error" and reply["ename"] == "ResourceLimitExceeded"
            assert "memory" in reply["evalue"], reply["evalue"]
            reply, outputs = await ws.execute("print(kept)")
            assert streams(outputs) == "41\n"  # rolled back to before the cell

            msg_id = await ws.send("shell", "execute_request", {
                "code": "print('looping', flush=True)\nwhile True: pass", "silent": False,
                "store_history": True, "user_expressions": {}, "allow_stdin": False,
                "stop_on_error": True})
            seen = ""
            while "looping" not in seen:
                msg = await ws.receive(120)
                if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
                    seen += msg["content"]["text"]
            code, _ = await rest(url, "POST", f"/api/kernels/{kernel_id}/interrupt", {})
            assert code == 204
            reply, _ = await ws.reply(msg_id)
            assert reply["ename"] == "KeyboardInterrupt", reply
            reply, outputs = await ws.execute("print(kept + 1)")
            assert streams(outputs) == "42\n"  # the session lives on
        finally:
            ws.close()
        assert listed(kernel_id)
    finally:
        code, _ = await rest(url, "DELETE", f"/api/kernels/{kernel_id}")
    assert code == 204
    wait_gone(lambda: listed(kernel_id), f"kernel {kernel_id}'s container")
    code, _ = await rest(url, "GET", f"/api/kernels/{kernel_id}")
    assert code == 404


async def test_secure_kernel_under_enterprise_gateways_docker_proxy(tmp_path: Path) -> None:
    engine = container_engine.connect()
    exe = gateway_or_fail(engine)

    def listed(kernel_id: str) -> list:
        return engine.containers.list(all=True, filters={"label": f"kernel_id={kernel_id}"},
                                      ignore_removed=True)  # (one being removed: left out)

    def check(kernel_id: str) -> None:
        [container] = listed(kernel_id)
        host = container.attrs["HostConfig"]
        assert host["Memory"] == host["MemorySwap"] == MEMORY
        assert host["PidsLimit"] == 24 + KERNEL_OVERHEAD_PIDS
        assert host["CapDrop"] == ["ALL"] and host["ReadonlyRootfs"] and host["Init"]
        assert "no-new-privileges:true" in host["SecurityOpt"]
        assert any(o.startswith("seccomp=") for o in host["SecurityOpt"])
        assert host["NetworkMode"] == network
        assert container.attrs["Config"]["User"] == "{}:{}".format(*EG_DEFAULT)
        assert not any(v.startswith("EG_") for v in container.attrs["Config"]["Env"])

    with kernel_network(engine) as (network, gateway_ip), \
            enterprise_gateway(exe, tmp_path, {"agenticraft_docker": "docker"}, network,
                               gateway_ip) as url:
        await run_kernel(url, "agenticraft_docker", listed, check, namespaces=True, uid=None)
    engine.close()


async def test_secure_kernel_under_enterprise_gateways_swarm_proxy(tmp_path: Path) -> None:
    engine = container_engine.connect()
    gateway_or_fail(engine)

    def listed(kernel_id: str) -> list:
        """The kernel's service and its task's container."""
        label = {"label": f"kernel_id={kernel_id}"}
        return engine.services.list(filters=label) + engine.containers.list(
            all=True, filters=label, ignore_removed=True)

    def check(kernel_id: str) -> None:
        [service] = engine.services.list(filters={"label": f"kernel_id={kernel_id}"})
        spec = service.attrs["Spec"]["TaskTemplate"]
        container = spec["ContainerSpec"]
        assert spec["Resources"]["Limits"]["MemoryBytes"] == MEMORY
        assert container["CapabilityDrop"] == ["ALL"] and container["ReadOnly"]
        assert container["Init"] and container["User"] == f"{OWN_UID}:{OWN_UID}"
        assert not any(v.startswith("EG_") for v in container["Env"])

    with single_node_swarm(engine), overlay_network(engine) as overlay, \
            kernel_network(engine) as (host_network, _), \
            enterprise_gateway_in_swarm(engine, tmp_path, {"agenticraft_swarm": "swarm"},
                                        overlay, host_network) as url:
        # A service takes no seccomp profile in Docker 20.10's API: Docker's default applies.
        await run_kernel(url, "agenticraft_swarm", listed, check, namespaces=False,
                         uid=OWN_UID)
    engine.close()
