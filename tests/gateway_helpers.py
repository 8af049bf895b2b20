"""Jupyter Enterprise Gateway for the gateway tests: started from its own virtualenv
(``.venv-eg``, made by scripts/test.sh: EG 3.x pins an older jupyter_client/jupyter_server than
the kernel needs) on 127.0.0.1, with our gateway kernelspecs; a client for its REST API and
kernel websocket (tornado, as Jupyter's own server uses)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import websocket_connect

from agenticraft import __version__
from agenticraft_kernel.gateway.kernelspec import write_gateway_kernel_spec

ROOT = Path(__file__).resolve().parents[1]
EG_VENV = Path(os.environ.get("AGENTICRAFT_EG_VENV", ROOT / ".venv-eg"))
KERNEL_IMAGE = os.environ.get("AGENTICRAFT_EG_KERNEL_IMAGE", f"agenticraft-eg-kernel:{__version__}")
LABEL = "org.agenticraft.gateway"


def gateway_or_fail(engine) -> Path:
    """EG's executable and the kernel image, or a failure saying how to get them."""
    exe = EG_VENV / "bin" / "jupyter-enterprisegateway"
    if not exe.exists():
        pytest.fail(f"no Enterprise Gateway at {exe} (scripts/test.sh makes it: python3 -m "
                    "venv .venv-eg && .venv-eg/bin/pip install jupyter_enterprise_gateway)")
    from docker.errors import ImageNotFound
    try:
        engine.images.get(KERNEL_IMAGE)
    except ImageNotFound:
        pytest.fail(f"no kernel image {KERNEL_IMAGE} (scripts/build-container-image.sh IMAGE "
                    f"--gateway {KERNEL_IMAGE} builds it)")
    return exe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def kernel_network(engine) -> Iterator[tuple[str, str]]:
    """A user-defined bridge network for the kernels' containers (dockerd runs with
    ``--bridge=none``, so EG's default ``bridge`` does not exist): EG reaches a kernel at its
    address on it, the kernel reaches EG at the bridge's gateway address on the host."""
    network = engine.networks.create(f"agenticraft-eg-{uuid.uuid4().hex[:8]}", driver="bridge",
                                     labels={LABEL: "1"})
    try:
        network.reload()
        gateway = network.attrs["IPAM"]["Config"][0]["Gateway"]
        yield network.name, gateway
    finally:
        network.remove()


@contextmanager
def enterprise_gateway(exe: Path, tmp: Path, specs: dict[str, str], network: str,
                       response_ip: str, swarm: bool = False) -> Iterator[str]:
    """EG on 127.0.0.1 with only our kernelspecs (``{name: mode}``); yields its base URL."""
    kernels = tmp / "share" / "jupyter" / "kernels"
    for name, mode in specs.items():
        write_gateway_kernel_spec(kernels / name, mode, KERNEL_IMAGE)
    port = free_port()
    env = {**os.environ, "JUPYTER_PATH": str(tmp / "share" / "jupyter"),
           "JUPYTER_DATA_DIR": str(tmp / "data"), "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
           "JUPYTER_CONFIG_DIR": str(tmp / "config"),
           "EG_DOCKER_NETWORK": network, "EG_RESPONSE_IP": response_ip,
           "EG_RESPONSE_PORT": str(free_port()), "EG_KERNEL_LAUNCH_TIMEOUT": "180"}
    env.pop("PYTHONPATH", None)
    log = (tmp / "eg.log").open("wb")
    proc = subprocess.Popen(
        [str(exe), "--ip=127.0.0.1", f"--port={port}", "--port_retries=0", "--log-level=DEBUG"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, lambda: proc.poll() is None, (tmp / "eg.log").read_text)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        sys.stdout.write((tmp / "eg.log").read_text(errors="replace")[-6000:])


def wait_ready(url: str, alive: Callable[[], bool], log: Callable[[], str],
               timeout: float = 120) -> None:
    """Poll EG's API until it answers (EG has no readiness notification)."""
    import urllib.error
    import urllib.request
    deadline = time.monotonic() + timeout
    while True:
        if not alive():
            pytest.fail(f"Enterprise Gateway exited:\n{log()}")
        try:
            with urllib.request.urlopen(f"{url}/api/kernelspecs", timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"Enterprise Gateway did not answer in {timeout} s:\n{log()}")
        time.sleep(0.2)


async def rest(url: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    response = await AsyncHTTPClient().fetch(HTTPRequest(
        f"{url}{path}", method=method, body=None if body is None else json.dumps(body),
        allow_nonstandard_methods=True, request_timeout=240), raise_error=False)
    text = response.body.decode() if response.body else ""
    return response.code, (json.loads(text) if text.strip() else None)


class KernelSocket:
    """The kernel's channels over EG's websocket (``/api/kernels/<id>/channels``)."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.session = uuid.uuid4().hex

    @classmethod
    async def connect(cls, url: str, kernel_id: str) -> KernelSocket:
        ws_url = url.replace("http://", "ws://") + f"/api/kernels/{kernel_id}/channels"
        return cls(await websocket_connect(ws_url))

    def close(self) -> None:
        self.ws.close()

    async def send(self, channel: str, msg_type: str, content: dict) -> str:
        msg_id = uuid.uuid4().hex
        await self.ws.write_message(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": msg_type, "session": self.session,
                       "username": "test", "version": "5.3", "date": ""},
            "parent_header": {}, "metadata": {}, "content": content, "channel": channel,
            "buffers": []}))
        return msg_id

    async def receive(self, timeout: float) -> dict:
        raw = await asyncio.wait_for(self.ws.read_message(), timeout)
        if raw is None:
            raise ConnectionError("the kernel websocket closed")
        return json.loads(raw)

    async def reply(self, msg_id: str, timeout: float = 120) -> tuple[dict, list[dict]]:
        """The shell reply to ``msg_id`` and the IOPub outputs it caused, once the kernel is
        idle again for it."""
        outputs: list[dict] = []
        reply = None
        idle = False
        while reply is None or not idle:
            msg = await self.receive(timeout)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if msg["channel"] == "shell":
                reply = msg["content"]
            elif kind == "status":
                idle = msg["content"]["execution_state"] == "idle"
            elif kind in ("stream", "error", "execute_result", "display_data"):
                outputs.append({"msg_type": kind, **msg["content"]})
        return reply, outputs

    async def execute(self, code: str) -> tuple[dict, list[dict]]:
        return await self.reply(await self.send("shell", "execute_request", {
            "code": code, "silent": False, "store_history": True, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": True}))


def streams(outputs: list[dict]) -> str:
    return "".join(o["text"] for o in outputs if o["msg_type"] == "stream")


def wait_gone(list_them, what: str, timeout: float = 60) -> None:
    """Poll the engine until ``list_them()`` is empty (the engine has no event for it here)."""
    deadline = time.monotonic() + timeout
    while list_them():
        assert time.monotonic() < deadline, f"{what} is still there after {timeout} s"
        time.sleep(0.2)


@contextmanager
def single_node_swarm(engine) -> Iterator[None]:
    """A single-node swarm on 127.0.0.1, left (with the bridge it made) afterwards; a swarm
    that was already there is used and left alone. The node is labelled so that
    scripts/container-engine.sh also leaves it after a crashed run."""
    state = engine.info()["Swarm"]["LocalNodeState"]
    if state == "active":
        yield
        return
    had_gwbridge = bool(engine.networks.list(names=["docker_gwbridge"]))
    engine.swarm.init(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:2377")
    try:
        node = engine.nodes.get(engine.info()["Swarm"]["NodeID"])
        spec = node.attrs["Spec"]
        node.update({**spec, "Labels": {**spec.get("Labels", {}), LABEL: "1"}})
        yield
    finally:
        engine.swarm.leave(force=True)
        if not had_gwbridge:
            for network in engine.networks.list(names=["docker_gwbridge"]):
                network.reload()  # the swarm's ingress endpoint may still be attached
                for endpoint in (network.attrs.get("Containers") or {}).values():
                    network.disconnect(endpoint["Name"], force=True)
                network.remove()


@contextmanager
def overlay_network(engine) -> Iterator[str]:
    """An attachable overlay network for EG and its kernels (as in EG's swarm deployment)."""
    network = engine.networks.create(f"agenticraft-eg-ov-{uuid.uuid4().hex[:8]}",
                                     driver="overlay", attachable=True, labels={LABEL: "1"})
    try:
        yield network.name
    finally:
        network.remove()


#: EG in a container on the overlay network: its response address is its own address there.
EG_IN_CONTAINER = (
    "import os, site, socket, sys; "
    "site.addsitedir('/eg'); "  # its .pth files: EG imports distutils, from setuptools here
    "os.environ['EG_RESPONSE_IP'] = socket.gethostbyname(socket.gethostname()); "
    "sys.argv = ['jupyter-enterprisegateway', '--ip=0.0.0.0', '--port=8888', "
    "'--log-level=DEBUG']; "
    "from enterprise_gateway import launch_instance; launch_instance()")


@contextmanager
def enterprise_gateway_in_swarm(engine, tmp: Path, specs: dict[str, str], overlay: str,
                                host_network: str) -> Iterator[str]:
    """EG as it runs in a swarm, in a container on the overlay network (a kernel's overlay
    address is reachable only from there), run by the kernel image's Python 3.11 with EG's
    virtualenv mounted read-only; the tests reach it on a bridge network of the host."""
    kernels = tmp / "share" / "jupyter" / "kernels"
    for name, mode in specs.items():
        write_gateway_kernel_spec(kernels / name, mode, KERNEL_IMAGE)
    site = EG_VENV / "lib" / "python3.11" / "site-packages"
    if not site.is_dir():  # its compiled wheels must suit the kernel image's Python 3.11
        pytest.fail(f"{EG_VENV} is not a Python 3.11 virtualenv (no {site})")
    container = engine.containers.run(
        KERNEL_IMAGE, ["python3", "-c", EG_IN_CONTAINER], detach=True, user="0:0",
        network=overlay, labels={LABEL: "1"}, working_dir="/tmp",
        environment={"PYTHONPATH": "/eg", "EG_INHERITED_ENVS": "PYTHONPATH",
                     "JUPYTER_PATH": "/jupyter", "HOME": "/tmp",
                     "EG_DOCKER_NETWORK": overlay, "EG_KERNEL_LAUNCH_TIMEOUT": "180"},
        volumes={str(site): {"bind": "/eg", "mode": "ro"},
                 str(tmp / "share" / "jupyter"): {"bind": "/jupyter", "mode": "ro"},
                 "/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"}})
    try:
        engine.networks.get(host_network).connect(container)
        container.reload()
        ip = container.attrs["NetworkSettings"]["Networks"][host_network]["IPAddress"]
        url = f"http://{ip}:8888"

        def alive() -> bool:
            container.reload()
            return container.status in ("created", "running")

        wait_ready(url, alive, lambda: container.logs().decode(errors="replace"))
        yield url
    finally:
        logs = container.logs().decode(errors="replace")
        container.remove(force=True)
        sys.stdout.write(logs[-6000:])
