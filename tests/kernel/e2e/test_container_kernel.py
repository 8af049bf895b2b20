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
