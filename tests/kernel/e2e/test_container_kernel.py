"""The secure kernel with sandbox_type="container": its cells run in an IPython session inside
a warm container (the same session machinery as the process sandbox), limits roll back, an
interrupt stops a loop, %%secure --sandbox docker picks the container for one cell from a
process kernel, and shutting the kernel down removes its container."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from agenticraft.sandbox import container_engine
from kernel.harness import Kernel, kernel_env

pytestmark = pytest.mark.timeout(240)


def containers_with(engine, label_value: str) -> list:
    return [c for c in container_engine.ours(engine)
            if c.labels.get(container_engine.OWNER_LABEL, "").split(":")[1:2] == [label_value]]


def test_container_kernel_runs_cells_and_rolls_back(data_dir: Path, tmp_path: Path) -> None:
    engine = container_engine.connect()
    k = Kernel(data_dir, kernel_env(tmp_path, timeout_seconds=3),
               extra_arguments=["--SecureKernel.sandbox_type=container"])
    try:
        reply, outputs = k.execute("import os, socket\nkept = 41\nprint(os.getuid(), "
                                   f"socket.gethostname() != {socket.gethostname()!r})")
        assert reply["status"] == "ok", outputs
        assert outputs[0]["text"] == "10001 True\n"  # the image's user, the container's host
        assert k.value("kept + 1") == "42"
        reply, _ = k.execute("kept = 0\nwhile True: pass")
        assert reply["ename"] == "ResourceLimitExceeded" and "timeout_seconds" in reply["evalue"]
        assert k.value("kept") == "41"  # rolled back
        msg_id = k.kc.execute("print('looping', flush=True)\nwhile True: pass")
        k.wait_stream(msg_id, "looping")
        started = time.monotonic()
        k.km.interrupt_kernel()
        reply = k.shell_reply(msg_id)
        assert reply["content"]["ename"] == "KeyboardInterrupt"
        assert time.monotonic() - started < 2.0  # honoured inside the container
        records = k.audit()
        cells = [r for r in records if r["type"] == "execution" and "kernel_id" in r]
        assert {r["sandbox_type"] for r in cells} == {"container"}
        kernel_pid = str(k.km.provisioner.process.pid)
        assert len(containers_with(engine, kernel_pid)) == 1
    finally:
        k.close()
    assert not containers_with(engine, kernel_pid)
    engine.close()


def test_secure_docker_cell_from_a_process_kernel(kernel: Kernel) -> None:
    # The notebook's directory (readable by default) is root's, mode 0700 here: the container's
    # user may not enter it, and the cell says so instead of dying in chdir.
    reply, outputs = kernel.execute("%%secure --sandbox docker\nimport os\nprint(os.getuid())")
    assert reply["status"] == "error" and "may not enter it" in reply["evalue"], outputs
    assert "--no-filesystem" in reply["evalue"]
    reply, outputs = kernel.execute("%%secure --sandbox docker --no-filesystem\n"
                                    "import os\nprint(os.getuid())")
    assert reply["status"] == "ok", outputs
    assert outputs[0]["text"] == "10001\n"
    reply, outputs = kernel.execute("%%secure --no-filesystem --image no-such-image:1\nx = 1")
    assert reply["status"] == "error" and "no-such-image:1" in reply["evalue"]


def test_container_kernel_with_an_allow_list(data_dir: Path, tmp_path: Path) -> None:
    """The kernel's allow-list in a container: the listed server is reached through the host's
    egress proxy, another is refused with the kernel's one [network] line, and
    %secure_status says what enforces it."""
    from egress_helpers import named_server

    with named_server("A") as a, named_server("B") as b:
        k = Kernel(data_dir, kernel_env(tmp_path, timeout_seconds=30,
                                        network_access=f"127.0.0.1:{a.port}"),
                   extra_arguments=["--SecureKernel.sandbox_type=container"])
        try:
            reply, outputs = k.execute(
                "import urllib.request, urllib.error\n"
                f"ok = urllib.request.urlopen('http://127.0.0.1:{a.port}/', timeout=10).read()\n"
                "try:\n"
                f"    urllib.request.urlopen('http://127.0.0.1:{b.port}/', timeout=10)\n"
                "except urllib.error.HTTPError as exc:\n"
                "    refused = exc.code\n")
            assert reply["status"] == "ok", outputs
            assert k.value("ok") == "b'hello from A'" and k.value("refused") == "403"
            assert a.hits == 1 and b.hits == 0
            stderr = "".join(o["text"] for o in outputs
                             if o["msg_type"] == "stream" and o["name"] == "stderr")
            assert stderr.count(f"[network] Permission denied: 127.0.0.1:{b.port} is not in "
                                "the allow-list") == 1, stderr
            _, outputs = k.execute("%secure_status")
            text = "".join(o.get("data", {}).get("text/plain", "") for o in outputs)
            assert f"only 127.0.0.1:{a.port}" in text and "network_mode none" in text, text
            assert "host-side egress proxy" in text
        finally:
            k.close()
