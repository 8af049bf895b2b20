"""The magics in the secure kernel, through jupyter_client: the parent parses ``%%secure`` and can
only tighten the kernel's context (tightening honoured, loosening refused before anything runs,
every decision audited); the views and the panel are the parent's own."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import pytest

from agenticraft.security.audit import AuditLog
from kernel.harness import Kernel, one_error


def displays(outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in outputs if o["msg_type"] == "display_data"]


def test_tightening_is_honoured_and_the_session_survives(kernel: Kernel) -> None:
    assert kernel.execute("kept = 5")[0]["status"] == "ok"
    reply, outputs = kernel.execute("%%secure --timeout 1\nkept = 6\nimport time\ntime.sleep(3)")
    error = one_error(outputs)
    assert reply["ename"] == error["ename"] == "ResourceLimitExceeded"
    assert "timeout_seconds (allowed 1.0 s" in error["evalue"]  # the kernel allows 4 s
    assert "rolled back" in error["evalue"]
    assert kernel.value("kept") == "5"
    reply, outputs = kernel.execute("%%secure --memory 64 --quiet\n"
                                    "hog = bytearray(200 * 1024 * 1024)")
    assert reply["ename"] == "ResourceLimitExceeded"
    assert "memory_mb (allowed 64 MB" in one_error(outputs)["evalue"]  # the kernel allows 256


def test_tightened_cell_shares_the_sessions_variables(kernel: Kernel) -> None:
    kernel.execute("base = 41")
    reply, outputs = kernel.execute("%%secure --timeout 2 --cpu 25\nanswer = base + 1\n"
                                    "print('answer', answer)")
    assert reply["status"] == "ok", outputs
    assert [o["text"] for o in outputs if o["msg_type"] == "stream"] == ["answer 42\n"]
    summary = displays(outputs)[-1]["data"]["text/plain"]
    assert "in this kernel's session" in summary
    assert "timeout_seconds 2 s, cpu_percent 25 %" in summary
    assert kernel.value("answer") == "42"


@pytest.mark.parametrize(("options", "expected"), [
    ("--timeout 30", "timeout_seconds=30 s is above this kernel's 4 s (the administrator's "
                     "ceiling is 600 s)"),
    ("--timeout 900", "timeout_seconds=900 s is above this kernel's 4 s (the administrator's "
                      "ceiling is 600 s)"),
    ("--memory 512", "memory_mb=512 MB is above this kernel's 256 MB"),
    ("--network", "network_access=allowed is above this kernel's off"),
    ("--permissions admin", "permission(s) admin beyond this kernel's"),
])
def test_loosening_is_refused_before_anything_runs(kernel: Kernel, options: str,
                                                   expected: str) -> None:
    kernel.execute("ran = False")
    reply, outputs = kernel.execute(f"%%secure {options}\nran = True")
    error = one_error(outputs)
    assert reply["ename"] == error["ename"] == "PermissionDenied"
    assert expected in error["evalue"] and "Nothing was run" in error["evalue"]
    assert kernel.value("ran") == "False"


def test_secure_cells_are_audited_with_their_options(kernel: Kernel) -> None:
    ok_cell = "%%secure --timeout 3 --quiet\naudited = 1"
    kernel.execute(ok_cell)
    kernel.execute("%%secure --timeout 1 --quiet\nwhile True:\n    pass")
    kernel.execute("%%secure --timeout 50\naudited = 2")
    records = kernel.audit()
    digest = hashlib.sha256(ok_cell.encode()).hexdigest()
    ok = [r for r in records if r["type"] == "execution" and r["code_sha256"] == digest][-1]
    assert ok["outcome"] == "ok" and ok["kernel_id"] == kernel.kernel_id
    assert ok["magic"]["line"] == "--timeout 3 --quiet"
    assert ok["magic"]["limits"] == {"timeout_seconds": 3.0}
    assert ok["limits"]["timeout_seconds"] == 3 and ok["limits"]["memory_mb"] == 256
    killed = [r for r in records if r["type"] == "execution"
              and r.get("magic", {}).get("line") == "--timeout 1 --quiet"][-1]
    assert killed["outcome"] == "limit_exceeded" and killed["limit"] == "timeout_seconds"
    violation = [r for r in records if r["type"] == "violation"][-1]
    assert violation["limit"] == "timeout_seconds" and violation["allowed"] == 1.0
    assert violation["code_sha256"] == killed["code_sha256"]
    denied = [r for r in records if r["type"] == "authorization" and not r["allowed"]][-1]
    assert denied["action"] == "secure_cell" and denied["permission"] == "timeout_seconds"
    assert "timeout_seconds=50 s is above this kernel's 4 s" in denied["reason"]
    refused = [r for r in records if r["type"] == "execution"][-1]
    assert refused["outcome"] == "denied" and refused["magic"]["line"] == "--timeout 50"
    assert AuditLog(kernel.audit_path).verify().ok


@pytest.mark.parametrize(("cell", "expected"), [
    ("%%secure --bogus\nx = 1", "unrecognized arguments: --bogus"),
    ("%%secure --timeout soon\nx = 1", "--timeout: timeout_seconds must be a positive number"),
    ("%%secure --timeout -2\nx = 1", "--timeout: timeout_seconds must be a positive number"),
    ("%%secure --max-output 0\nx = 1", "max_output_bytes must be a positive number"),
    ("%%secure --timeout 2\n\n  \n", "the cell is empty"),
    ("%secure --timeout 2", "%secure is a cell magic"),
    ("%secure_audit --type nonsense", "invalid choice: 'nonsense'"),
    ("%secure_panel now", "unrecognized arguments: now"),
])
def test_bad_input_is_a_one_line_usage_error(kernel: Kernel, cell: str, expected: str) -> None:
    reply, outputs = kernel.execute(cell)
    error = one_error(outputs)
    assert reply["status"] == "error" and error["ename"] == "UsageError"
    assert expected in error["evalue"]
    assert len(error["traceback"]) == 1 and "\n" not in error["evalue"]


def test_help_prints_usage(kernel: Kernel) -> None:
    reply, outputs = kernel.execute("%%secure --help\nnever = 1")
    assert reply["status"] == "ok"
    text = "".join(o.get("text", "") for o in outputs if o["msg_type"] == "stream")
    assert "usage: %%secure" in text and "--max-file-size MB" in text


def test_fresh_sandbox_cells_pass_variables_with_in_and_out(kernel: Kernel) -> None:
    kernel.execute("numbers = [1, 2, 3]\nthing = {1, 2}")
    reply, outputs = kernel.execute("%%secure --sandbox restricted --in numbers --out total\n"
                                    "total = sum(n * 10 for n in numbers)")
    assert reply["status"] == "ok", outputs
    assert "fresh sandbox (the restricted sandbox)" in displays(outputs)[-1]["data"]["text/plain"]
    assert kernel.value("total") == "60"
    reply, outputs = kernel.execute("%%secure --sandbox restricted --in thing\nx = 1")
    assert reply["ename"] == "TransferError"
    assert "--in thing: a set cannot cross" in one_error(outputs)["evalue"]
    reply, outputs = kernel.execute("%%secure --sandbox restricted --out gone\nx = 1")
    assert "gone: the cell did not define it" in one_error(outputs)["evalue"]
    reply, outputs = kernel.execute("%%secure --sandbox restricted\nimport os")
    assert reply["ename"] == "SecurityViolation"


def test_limits_the_session_cannot_change_run_in_a_fresh_sandbox(kernel: Kernel) -> None:
    kernel.execute("kept = 'session'")
    reply, outputs = kernel.execute("%%secure --max-file-size 1 --in kept --out size\n"
                                    "with open('small.bin', 'wb') as fh:\n"
                                    "    size = fh.write(b'x' * 1000)\nprint(kept)")
    assert reply["status"] == "ok", outputs
    assert "session\n" in [o.get("text") for o in outputs if o["msg_type"] == "stream"]
    assert "max_file_size_mb 1 MB" in displays(outputs)[-1]["data"]["text/plain"]
    assert kernel.value("size") == "1000"
    reply, outputs = kernel.execute("%%secure --max-file-size 1\n"
                                    "open('big.bin', 'wb').write(b'x' * 3_000_000)")
    assert reply["ename"] == "ResourceLimitExceeded"
    assert "max_file_size_mb" in one_error(outputs)["evalue"]


def test_interrupt_stops_a_fresh_sandbox_cell(kernel: Kernel) -> None:
    kernel.execute("%%secure --sandbox restricted --quiet\nwarm = 1")  # its workers are up
    msg_id = kernel.kc.execute("%%secure --sandbox restricted\nwhile True:\n    pass")
    kernel.wait_busy(msg_id)
    started = time.monotonic()
    kernel.km.interrupt_kernel()
    reply = kernel.shell_reply(msg_id)["content"]
    assert reply["ename"] == "KeyboardInterrupt", reply
    assert time.monotonic() - started < 3  # not the 4 s timeout
    kernel.drain_iopub()
    assert kernel.value("1 + 1") == "2"


def test_status_and_audit_views(kernel: Kernel) -> None:
    reply, outputs = kernel.execute("%secure_status")
    assert reply["status"] == "ok"
    data = displays(outputs)[0]["data"]
    assert "enforced here by" in data["text/plain"]
    assert "timeout_seconds    4 s" in data["text/plain"]
    assert "supervisor wall clock" in data["text/plain"]
    assert "<table" in data["text/html"]
    code = "%%secure --quiet --timeout 2\nviewed = 1"
    kernel.execute(code)
    reply, outputs = kernel.execute("%secure_audit -n 3 --type execution --verify")
    assert reply["status"] == "ok"
    data = displays(outputs)[0]["data"]
    assert hashlib.sha256(code.encode()).hexdigest()[:12] in data["text/plain"]
    assert "%%secure --quiet --timeout 2" in data["text/plain"]
    assert "hash chain intact" in data["text/plain"]
    assert data["text/html"].count("<tr>") == 4


def test_load_ext_in_the_secure_kernel_changes_nothing(kernel: Kernel) -> None:
    reply, outputs = kernel.execute("%load_ext agenticraft_kernel")
    assert reply["status"] == "ok"
    assert "built into this kernel" in "".join(o.get("text", "") for o in outputs)
    reply, _ = kernel.execute("%%secure --timeout 30\nx = 1")  # still the parent's magic
    assert reply["ename"] == "PermissionDenied"


def test_misplaced_magic_is_explained(kernel: Kernel) -> None:
    reply, _outputs = kernel.execute("x = 1\n%secure_status")
    assert reply["ename"] == "UsageError"
    assert "answered by the AgentiCraft Secure kernel" in reply["evalue"]


def widget_ids(outputs: list[dict[str, Any]]) -> dict[str, str]:
    """CSS class -> comm id of the panel's widgets, from their comm_open messages."""
    found = {}
    for o in outputs:
        if o["msg_type"] == "comm_open":
            for css in o["data"]["state"].get("_dom_classes", []):
                found[css] = o["comm_id"]
    return found


def values_of(outputs: list[dict[str, Any]], comm_id: str) -> list[Any]:
    return [o["data"]["state"]["value"] for o in outputs if o["msg_type"] == "comm_msg"
            and o["comm_id"] == comm_id and "value" in o["data"].get("state", {})]


def test_panel_is_served_by_the_parent_and_moves_while_a_cell_runs(kernel: Kernel) -> None:
    reply, outputs = kernel.execute("%secure_panel")
    assert reply["status"] == "ok"
    bundle = displays(outputs)[0]["data"]
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "AgentiCraft Secure panel" in bundle["text/plain"]  # the text fallback
    ids = widget_ids(outputs)
    elapsed, memory = ids["agenticraft-readout-elapsed"], ids["agenticraft-readout-memory"]
    # the panel's comms are the parent's: listed for the frontend, unknown to the worker
    kernel.kc.comm_info(target_name="jupyter.widget")
    info = kernel.kc.get_shell_msg(timeout=10)["content"]["comms"]
    assert elapsed in info and memory in info
    assert kernel.value(f"'{elapsed}' in __import__('comm').get_comm_manager().comms") == \
        "False"

    reply, outputs = kernel.execute("import time\nhog = bytearray(60 * 1024 * 1024)\n"
                                    "time.sleep(1.2)")
    assert reply["status"] == "ok"
    seconds = [float(v.split(" / ")[0]) for v in values_of(outputs, elapsed)
               if not v.startswith("-")]
    assert len(seconds) >= 3 and seconds == sorted(seconds) and seconds[-2] >= 0.5, seconds
    assert all(v.endswith("/ 4 s") for v in values_of(outputs, elapsed))
    live = [float(v.split(" / ")[0]) for v in values_of(outputs, memory) if v[0].isdigit()]
    assert live and max(live) > 60, values_of(outputs, memory)

    # a frontend change to the panel's filter is answered by the parent
    type_filter, history = ids["agenticraft-audit-type"], ids["agenticraft-audit-history"]
    msg = kernel.kc.session.msg("comm_msg", {"comm_id": type_filter, "data": {
        "method": "update", "state": {"index": 3}, "buffer_paths": []}})  # "execution"
    kernel.kc.shell_channel.send(msg)
    deadline = time.monotonic() + 10
    updated = None
    while updated is None:
        got = kernel.kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        state = got["content"].get("data", {}).get("state", {})
        if got["msg_type"] == "comm_msg" and got["content"]["comm_id"] == history \
                and "value" in state:
            updated = state["value"]
    assert ">execution</td>" in updated and ">session</td>" not in updated

    # user code cannot forge the panel's messages, even knowing a comm id
    forge = ("import comm\nc = comm.create_comm(target_name='jupyter.widget', comm_id='%s', "
             "data={'state': {'value': 'FORGED'}})\n"
             "c.send({'method': 'update', 'state': {'value': 'FORGED'}, 'buffer_paths': []})")
    reply, outputs = kernel.execute(forge % elapsed)
    assert reply["status"] == "ok", outputs
    assert "FORGED" not in values_of(outputs, elapsed)
    assert not [o for o in outputs if o["msg_type"] == "comm_open" and o["comm_id"] == elapsed]
