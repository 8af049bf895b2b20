"""Shared helpers for the kernel tests: a kernelspec in a temp prefix, kernels started through
jupyter_client with an explicit environment (the user's real Jupyter dirs are never touched)."""

from __future__ import annotations

import json
import os
import queue
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

from agenticraft_kernel.cli.install import write_kernel_spec

KERNEL = "agenticraft-secure"
KERNEL_MSG = "agenticraft-secure-msg"  # same kernel, interrupt_mode "message"


def install_specs(root: Path) -> Path:
    """Both kernelspecs under ``root/share/jupyter/kernels``; returns the data dir."""
    kernels = root / "share" / "jupyter" / "kernels"
    write_kernel_spec(kernels / KERNEL)
    msg = write_kernel_spec(kernels / KERNEL_MSG, display_name="AgentiCraft Secure (message)")
    spec = json.loads((msg / "kernel.json").read_text())
    spec["interrupt_mode"] = "message"
    (msg / "kernel.json").write_text(json.dumps(spec))
    return root / "share" / "jupyter"


def kernel_env(tmp: Path, **settings: Any) -> dict[str, str]:
    """Environment for a kernel: private runtime/config/audit paths plus AGENTICRAFT_* limits."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTICRAFT_")}
    env.update(JUPYTER_RUNTIME_DIR=str(tmp / "runtime"), JUPYTER_CONFIG_DIR=str(tmp / "config"),
               IPYTHONDIR=str(tmp / "ipython"), AGENTICRAFT_AUDIT_LOG=str(tmp / "audit.jsonl"),
               AGENTICRAFT_CONFIG=str(tmp / "agenticraft_config.py"))
    (tmp / "agenticraft_config.py").write_text("SECURITY_CONFIG = {}\n")
    for key, value in settings.items():
        env[f"AGENTICRAFT_DEFAULT_{key.upper()}"] = str(value)
    return env


def ok(kernel: Kernel, code: str) -> list[dict[str, Any]]:
    """Run a cell that must succeed; its IOPub outputs."""
    reply, outputs = kernel.execute(code)
    assert reply["status"] == "ok", (reply, outputs)
    return outputs


def one_error(outputs: list[dict[str, Any]]) -> dict[str, Any]:
    """The cell's only error output (fails when there is none, or more than one)."""
    found = [o for o in outputs if o["msg_type"] == "error"]
    assert len(found) == 1, outputs
    return found[0]


class Kernel:
    """A running kernel and a blocking client, with small helpers."""

    def __init__(self, data_dir: Path, env: dict[str, str], *, name: str = KERNEL,
                 cwd: Path | None = None, extra_arguments: list[str] | None = None) -> None:
        ksm = KernelSpecManager(kernel_dirs=[str(data_dir / "kernels")])
        self.kernel_id = str(uuid.uuid4())
        runtime = Path(env["JUPYTER_RUNTIME_DIR"])
        runtime.mkdir(parents=True, exist_ok=True)
        self.km = KernelManager(kernel_name=name, kernel_spec_manager=ksm,
                                connection_file=str(runtime / f"kernel-{self.kernel_id}.json"))
        self.km.start_kernel(env=env, cwd=str(cwd) if cwd else None,
                             extra_arguments=extra_arguments or [])
        self.kc: BlockingKernelClient = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.audit_path = Path(env["AGENTICRAFT_AUDIT_LOG"])

    def execute(self, code: str, timeout: float = 60, *,
                stdin_hook: Callable[[dict[str, Any]], None] | None = None,
                allow_stdin: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Run a cell; (execute_reply content, IOPub output messages as (type, content))."""
        outputs: list[dict[str, Any]] = []

        def hook(msg: dict[str, Any]) -> None:
            if msg["msg_type"] not in ("status", "execute_input"):
                outputs.append({"msg_type": msg["msg_type"], **msg["content"]})

        reply = self.kc.execute_interactive(code, timeout=timeout, output_hook=hook,
                                            stdin_hook=stdin_hook,
                                            allow_stdin=allow_stdin or stdin_hook is not None)
        return reply["content"], outputs

    def value(self, expr: str) -> str:
        reply, outputs = self.execute(expr)
        assert reply["status"] == "ok", reply
        results = [o for o in outputs if o["msg_type"] == "execute_result"]
        assert results, outputs
        return results[-1]["data"]["text/plain"]

    def shell_reply(self, msg_id: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            msg = self.kc.get_shell_msg(timeout=max(0.01, deadline - time.monotonic()))
            if msg["parent_header"].get("msg_id") == msg_id:
                return msg

    def wait_busy(self, msg_id: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            msg = self.kc.get_iopub_msg(timeout=max(0.01, deadline - time.monotonic()))
            if (msg["parent_header"].get("msg_id") == msg_id
                    and msg["msg_type"] == "execute_input"):
                return

    def wait_stream(self, msg_id: str, text: str, timeout: float = 30) -> None:
        """Wait until the cell ``msg_id`` has printed ``text`` (proof it is running its code)."""
        deadline = time.monotonic() + timeout
        seen = ""
        while text not in seen:
            msg = self.kc.get_iopub_msg(timeout=max(0.01, deadline - time.monotonic()))
            if (msg["parent_header"].get("msg_id") == msg_id
                    and msg["msg_type"] == "stream"):
                seen += msg["content"]["text"]

    def drain_iopub(self) -> None:
        while True:
            try:
                self.kc.get_iopub_msg(timeout=0.2)
            except queue.Empty:
                return

    def audit(self) -> list[dict[str, Any]]:
        if not self.audit_path.exists():
            return []
        return [json.loads(line) for line in self.audit_path.read_text().splitlines() if line]

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=False)
