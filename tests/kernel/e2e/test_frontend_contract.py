"""What a frontend asks of an ipykernel that the parent serves: ``exit()`` stops the kernel after
its reply (ipykernel's ``ask_exit`` contract), and ``usage_request`` on the control channel is
answered in ipykernel's shape (what jupyter-resource-usage's kernel sidebar reads) with the
sandbox's numbers, not the parent's."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from kernel.harness import Kernel, kernel_env

#: The keys of ipykernel's usage_reply (jupyter-resource-usage's kernel usage handler reads them).
USAGE_KEYS = {"hostname", "pid", "kernel_cpu", "kernel_memory", "cpu_count",
              "host_virtual_memory"}


def usage(k: Kernel) -> dict[str, Any]:
    msg = k.kc.session.msg("usage_request", {})
    k.kc.control_channel.send(msg)
    deadline = time.monotonic() + 30
    while True:
        reply = k.kc.control_channel.get_msg(timeout=max(0.01, deadline - time.monotonic()))
        if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
            assert reply["msg_type"] == "usage_reply"
            return reply["content"]


@pytest.fixture
def fresh(data_dir: Path, tmp_path: Path) -> Iterator[Kernel]:
    k = Kernel(data_dir, kernel_env(tmp_path, memory_mb=1024), cwd=tmp_path)
    yield k
    k.close()


def test_exit_in_a_cell_replies_with_ask_exit_then_stops_the_kernel(fresh: Kernel) -> None:
    reply, _ = fresh.execute("x = 1")
    assert reply["status"] == "ok"
    reply, outputs = fresh.execute("exit()")
    assert reply["status"] == "ok", (reply, outputs)
    assert reply["payload"] == [{"source": "ask_exit", "keepkernel": False}]
    process = fresh.km.provisioner.process  # the kernel's Popen
    assert process.wait(timeout=30) == 0


def test_quit_keep_kernel_keeps_it(fresh: Kernel) -> None:
    reply, _ = fresh.execute("quit(keep_kernel=True)")
    assert reply["payload"] == [{"source": "ask_exit", "keepkernel": True}]
    assert fresh.value("1 + 1") == "2"


def test_usage_reply_has_ipykernels_shape_and_measures_the_sandbox(fresh: Kernel) -> None:
    fresh.value("1")  # the sandbox session is up
    before = usage(fresh)
    assert set(before) >= USAGE_KEYS, before
    assert before["pid"] == fresh.km.provisioner.pid
    parent = psutil.Process(fresh.km.provisioner.pid)
    assert before["sandbox_pids"] and parent.pid not in before["sandbox_pids"]
    assert all(pid != os.getpid() for pid in before["sandbox_pids"])
    # 300 MB held by the session's variables show up in the reply; the parent's own memory
    # does not change.
    fresh.value("blob = bytearray(300 * 1024 * 1024); len(blob)")
    after = usage(fresh)
    assert after["kernel_memory"] - before["kernel_memory"] > 250 * 1024 * 1024
    assert parent.memory_info().rss < 250 * 1024 * 1024


def test_parent_uses_only_the_connection_files_ports(kernel: Kernel) -> None:
    """Start-up race: jupyter_client picks a kernel's ports by binding to port 0 and closing, so
    any port a starting kernel takes at random (ipykernel's IOPub pipe, a connection's local
    port) can be one another starting kernel was just given, which then dies with "Address
    already in use". The parent takes none: its TCP sockets are the five it was given."""
    kernel.value("1")
    info = kernel.km.get_connection_info()
    given = {info[k] for k in ("shell_port", "iopub_port", "stdin_port", "control_port",
                               "hb_port")}
    process = psutil.Process(kernel.km.provisioner.pid)
    local = {c.laddr.port for c in process.net_connections(kind="tcp")
             if c.status == psutil.CONN_LISTEN or not c.raddr}
    outgoing = [c for c in process.net_connections(kind="tcp")
                if c.raddr and c.laddr.port not in given]
    assert local == given
    assert outgoing == []
