"""The secure kernel itself in a container, launched the way Enterprise Gateway's Docker process
proxy does (a kernelspec whose argv is a `docker run` of the kernel image), with Docker's
default seccomp profile, no capabilities, no network and a non-root user. The client reaches it
over ZeroMQ ipc sockets in a bind-mounted runtime directory. Cells run in the process sandbox
inside the container with what that container allows; a limit rolls the session back; an
interrupt (message mode) stops a loop; shutting down removes the container."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import pytest
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager

from agenticraft.sandbox import container_engine
from agenticraft.security.policy import default_container_image

pytestmark = pytest.mark.timeout(240)

UID = 10001
LAUNCH = ("import sys; sys.path.insert(0, '/opt/agenticraft'); "
          "from agenticraft_kernel.parent.app import main; main(sys.argv[1:])")


def kernelspec(root: Path, runtime: Path, label: str) -> Path:
    spec = root / "kernels" / "secure-docker"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": ["docker", "run", "--rm", "--init", "--network", "none", "--cap-drop", "ALL",
                 "--security-opt", "no-new-privileges:true", "--read-only",
                 "--tmpfs", "/tmp:size=64m", "--user", f"{UID}:{UID}",
                 "--label", f"org.agenticraft.test={label}",
                 "-v", f"{runtime}:{runtime}", "-e", "HOME=/tmp",
                 "-e", "AGENTICRAFT_AUDIT_LOG=/tmp/audit.jsonl",
                 "-e", "AGENTICRAFT_DEFAULT_TIMEOUT_SECONDS=3", "-w", "/tmp",
                 default_container_image(), "python3", "-I", "-c", LAUNCH,
                 "-f", "{connection_file}"],
        "display_name": "AgentiCraft Secure (Docker)", "language": "python",
        "interrupt_mode": "message"}))
    return spec


def test_kernel_in_a_container_with_dockers_default_seccomp(tmp_path: Path) -> None:
    engine = container_engine.connect()
    label = uuid.uuid4().hex
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    os.chown(runtime, UID, UID)
    kernelspec(tmp_path, runtime, label)
    km = KernelManager(kernel_name="secure-docker", transport="ipc", ip=str(runtime / "k"),
                       kernel_spec_manager=KernelSpecManager(
                           kernel_dirs=[str(tmp_path / "kernels")]),
                       connection_file=str(runtime / "kernel.json"))
    km.write_connection_file()
    os.chown(km.connection_file, UID, UID)  # the kernel reads it as the container's user
    km.start_kernel()
    kc = km.blocking_client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=120)

        def run(code: str) -> tuple[dict, list[dict]]:
            outputs: list[dict] = []
            reply = kc.execute_interactive(
                code, timeout=60, output_hook=lambda m: outputs.append(
                    {"msg_type": m["msg_type"], **m["content"]}))
            return reply["content"], outputs

        reply, outputs = run("import os\nkept = 41\nprint(os.getuid())")
        assert reply["status"] == "ok", outputs
        assert [o["text"] for o in outputs if o["msg_type"] == "stream"] == [f"{UID}\n"]
        reply, _ = run("kept = 0\nwhile True: pass")
        assert reply["ename"] == "ResourceLimitExceeded"
        reply, outputs = run("print(kept)")
        assert [o["text"] for o in outputs if o["msg_type"] == "stream"] == ["41\n"]
        msg_id = kc.execute("print('looping', flush=True)\nwhile True: pass")
        seen = ""
        while "looping" not in seen:
            msg = kc.get_iopub_msg(timeout=30)
            if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
                seen += msg["content"]["text"]
        km.interrupt_kernel()
        while True:
            msg = kc.get_shell_msg(timeout=30)
            if msg["parent_header"].get("msg_id") == msg_id:
                break
        assert msg["content"]["ename"] == "KeyboardInterrupt"
        reply, outputs = run("x = 1")  # the session lives on after the interrupt
        assert reply["status"] == "ok"
        assert len(engine.containers.list(filters={"label": f"org.agenticraft.test={label}"})) == 1
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
    deadline = time.monotonic() + 30
    while engine.containers.list(all=True, filters={"label": f"org.agenticraft.test={label}"},
                                 ignore_removed=True):  # (one being removed now is left out)
        assert time.monotonic() < deadline, "the kernel's container is still there"
        time.sleep(0.1)
    engine.close()
