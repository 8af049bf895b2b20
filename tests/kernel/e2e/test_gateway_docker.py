"""Jupyter Enterprise Gateway, started from its own virtualenv, launching the secure kernel
through our kernelspec for its ``DockerProcessProxy``: a kernel created over EG's REST API with
per-kernel ``KERNEL_*`` limits, cells over EG's websocket, a limit hit and rolled back, an
interrupt over EG's comm port, shutdown; the container has the limits and hardening the
kernelspec's launcher promises, and is gone afterwards."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agenticraft.sandbox import container_engine
from agenticraft_kernel.gateway.launch_docker import KERNEL_OVERHEAD_MB, KERNEL_OVERHEAD_PIDS

from gateway_helpers import (
    KernelSocket,
    enterprise_gateway,
    gateway_or_fail,
    kernel_network,
    rest,
    streams,
    wait_gone,
)

pytestmark = pytest.mark.timeout(420)

UID = 10001
REQUEST = {"KERNEL_USERNAME": "alice", "KERNEL_UID": str(UID), "KERNEL_GID": str(UID),
           "KERNEL_MEMORY_MB": "200", "KERNEL_MAX_PROCESSES": "24"}


async def test_secure_kernel_under_enterprise_gateways_docker_proxy(tmp_path: Path) -> None:
    engine = container_engine.connect()
    exe = gateway_or_fail(engine)
    with kernel_network(engine) as (network, gateway_ip), \
            enterprise_gateway(exe, tmp_path, {"agenticraft_docker": "docker"}, network,
                               gateway_ip) as url:
        code, specs = await rest(url, "GET", "/api/kernelspecs")
        assert code == 200 and "agenticraft_docker" in specs["kernelspecs"], specs
        started = time.monotonic()
        code, kernel = await rest(url, "POST", "/api/kernels",
                                  {"name": "agenticraft_docker", "env": REQUEST})
        assert code == 201, kernel
        print(f"\nkernel started over Enterprise Gateway in {time.monotonic() - started:.2f} s")
        kernel_id = kernel["id"]

        def ours() -> list:
            return engine.containers.list(all=True, filters={"label": f"kernel_id={kernel_id}"})

        try:
            [container] = ours()
            host = container.attrs["HostConfig"]
            assert host["Memory"] == host["MemorySwap"] == (200 + KERNEL_OVERHEAD_MB) << 20
            assert host["PidsLimit"] == 24 + KERNEL_OVERHEAD_PIDS
            assert host["CapDrop"] == ["ALL"] and host["ReadonlyRootfs"] and host["Init"]
            assert "no-new-privileges:true" in host["SecurityOpt"]
            assert any(o.startswith("seccomp=") for o in host["SecurityOpt"])
            assert host["NetworkMode"] == network
            assert container.attrs["Config"]["User"] == f"{UID}:{UID}"
            assert not any(v.startswith("EG_") for v in container.attrs["Config"]["Env"])

            ws = await KernelSocket.connect(url, kernel_id)
            try:
                reply, outputs = await ws.execute(
                    "import os\nkept = 41\nprint(os.getuid())")
                assert reply["status"] == "ok", outputs
                assert streams(outputs) == f"{UID}\n"
                # The kernel's context came from the KERNEL_* values: user alice, 200 MB.
                reply, outputs = await ws.execute("%secure_status")
                assert reply["status"] == "ok", outputs
                status = streams(outputs) + str(outputs)
                assert "alice" in status and "200" in status, status
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
                    if (msg["parent_header"].get("msg_id") == msg_id
                            and msg["msg_type"] == "stream"):
                        seen += msg["content"]["text"]
                code, _ = await rest(url, "POST", f"/api/kernels/{kernel_id}/interrupt", {})
                assert code == 204
                reply, _ = await ws.reply(msg_id)
                assert reply["ename"] == "KeyboardInterrupt", reply
                reply, outputs = await ws.execute("print(kept + 1)")
                assert streams(outputs) == "42\n"  # the session lives on
            finally:
                ws.close()
            assert len(ours()) == 1
        finally:
            code, _ = await rest(url, "DELETE", f"/api/kernels/{kernel_id}")
        assert code == 204
        wait_gone(ours, "the kernel's container")
        code, _ = await rest(url, "GET", f"/api/kernels/{kernel_id}")
        assert code == 404
