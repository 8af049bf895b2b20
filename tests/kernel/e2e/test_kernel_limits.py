"""Limits in notebook terms, through jupyter_client: a cell that exceeds a limit ends with an
error output naming the limit; the session rolls back and earlier variables survive."""

from __future__ import annotations

import pytest

from kernel.harness import Kernel, one_error


@pytest.fixture(autouse=True)
def survivor(kernel: Kernel) -> None:
    reply, _ = kernel.execute("survivor = [1, 2, 3]")
    assert reply["status"] == "ok"


def assert_survived(kernel: Kernel) -> None:
    assert kernel.value("survivor") == "[1, 2, 3]"


def test_timeout_rolls_back(kernel: Kernel) -> None:
    reply, outputs = kernel.execute("survivor.append(4)\nimport time\ntime.sleep(60)")
    error = one_error(outputs)
    assert reply["status"] == "error"
    assert reply["ename"] == error["ename"] == "ResourceLimitExceeded"
    assert "timeout_seconds" in error["evalue"] and "allowed 4" in error["evalue"]
    assert "rolled back" in error["evalue"]
    assert "timeout_seconds" in "".join(error["traceback"])
    assert_survived(kernel)


def test_memory_bomb_rolls_back(kernel: Kernel) -> None:
    reply, outputs = kernel.execute(
        "survivor.append(5)\nhog = []\nwhile True:\n    hog.append(b'x' * 10_000_000)")
    error = one_error(outputs)
    assert reply["ename"] == "ResourceLimitExceeded"
    assert "memory_mb" in error["evalue"] and "256" in error["evalue"]
    assert "rolled back" in error["evalue"]
    assert_survived(kernel)
    assert kernel.value("'hog' in globals()") == "False"


def test_single_huge_allocation_rolls_back(kernel: Kernel) -> None:
    reply, outputs = kernel.execute("survivor.clear()\nbig = bytearray(2 * 1024**3)")
    assert one_error(outputs)["ename"] == "ResourceLimitExceeded"
    assert "memory_mb (allowed 256 MB" in reply["evalue"]  # a cgroup also says what it reached
    assert_survived(kernel)


def test_os_exit_rolls_back(kernel: Kernel) -> None:
    reply, outputs = kernel.execute("survivor.pop()\nimport os\nos._exit(3)")
    error = one_error(outputs)
    assert reply["status"] == "error"
    assert "rolled back" in error["evalue"]
    assert_survived(kernel)


def test_output_flood_is_cut(kernel: Kernel) -> None:
    reply, outputs = kernel.execute("for i in range(100_000):\n    print('flood', i)")
    text = "".join(o.get("text", "") for o in outputs if o["msg_type"] == "stream")
    assert "output truncated" in text and "max_output_bytes" in text
    assert len(text.encode()) < 20000 + 500
    assert reply["status"] == "ok"
    kernel.execute("print('after the flood')")
    _, outputs = kernel.execute("print('fresh cell')")
    assert [o["text"] for o in outputs if o["msg_type"] == "stream"] == ["fresh cell\n"]


def test_denied_network_is_an_error_and_audited(kernel: Kernel) -> None:
    code = "import socket\nsocket.create_connection(('192.0.2.1', 80), timeout=3)"
    reply, outputs = kernel.execute(code)
    assert reply["status"] == "error"
    assert one_error(outputs)["ename"] in ("PermissionError", "OSError")
    records = kernel.audit()
    assert any(r["type"] == "violation" and r["limit"] == "network_access"
               and r.get("reported_by") == "worker" for r in records)
    assert_survived(kernel)


def test_denied_filesystem_write(kernel: Kernel) -> None:
    _reply, outputs = kernel.execute("open('/usr/agenticraft-test', 'w')")
    assert one_error(outputs)["ename"] in ("PermissionError", "OSError")  # EROFS: read-only root
    assert any(r["type"] == "violation" and r["limit"] == "filesystem_access"
               for r in kernel.audit())
