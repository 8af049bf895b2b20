"""The parent kernel through jupyter_client: interrupts, responsiveness while a cell runs,
stdin, comms both ways, what the worker cannot reach, restart, the audit trail."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from agenticraft.security.audit import AuditLog
from kernel.harness import KERNEL_MSG, Kernel, kernel_env


def test_kernel_info_advertises_only_real_features(kernel: Kernel) -> None:
    reply = kernel.shell_reply(kernel.kc.kernel_info())
    content = reply["content"]
    assert content["implementation"] == "agenticraft-secure"
    assert content["language_info"]["name"] == "python"
    # the debugger where the sandbox can hold it (tests/kernel/e2e/test_debugger.py)
    assert set(content["supported_features"]) <= {"debugger"}


def test_ipython_semantics(kernel: Kernel) -> None:
    kernel.execute("a = 6 * 7")
    assert kernel.value("a") == "42"
    assert kernel.value("_") == "42"
    count = kernel.execute("a")[0]["execution_count"]
    assert kernel.value(f"Out[{count}]") == "42"
    reply, outputs = kernel.execute("%timeit -n1 -r1 sum(range(10))")
    assert reply["status"] == "ok" and "loop" in outputs[0]["text"]
    reply, outputs = kernel.execute("%%capture cap\nprint('hidden')")
    assert reply["status"] == "ok" and not outputs
    assert kernel.value("cap.stdout") == "'hidden\\n'"


def test_interrupt_signal_mode_stops_busy_loop(kernel: Kernel) -> None:
    kernel.execute("kept = 'yes'")
    msg_id = kernel.kc.execute("print('looping', flush=True)\nwhile True: pass")
    kernel.wait_stream(msg_id, "looping")
    started = time.monotonic()
    kernel.km.interrupt_kernel()
    reply = kernel.shell_reply(msg_id)
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "KeyboardInterrupt"
    assert time.monotonic() - started < 2.0  # honoured, not killed after the grace period
    assert kernel.value("kept") == "'yes'"


def test_interrupt_ignored_is_killed_and_rolled_back(kernel: Kernel) -> None:
    kernel.execute("kept = 'still'")
    msg_id = kernel.kc.execute(
        "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nkept = 'changed'\n"
        "print('ignoring', flush=True)\nwhile True: pass")
    kernel.wait_stream(msg_id, "ignoring")
    kernel.km.interrupt_kernel()
    reply = kernel.shell_reply(msg_id)["content"]
    assert reply["ename"] == "KeyboardInterrupt"
    assert "rolled back" in reply["evalue"]
    assert kernel.value("kept") == "'still'"
    assert kernel.value("'signal' in globals()") == "False"  # the import was rolled back too
    assert kernel.value("import signal\nsignal.getsignal(signal.SIGINT) is "
                        "signal.default_int_handler") == "True"


def test_heartbeat_and_kernel_info_while_cell_runs(kernel: Kernel) -> None:
    msg_id = kernel.kc.execute("while True: pass")
    kernel.wait_busy(msg_id)
    assert kernel.kc.hb_channel.is_beating()
    info_id = kernel.kc.kernel_info()
    info = kernel.kc.get_shell_msg(timeout=5)  # the next shell message: not the execute_reply
    assert info["parent_header"]["msg_id"] == info_id
    assert info["msg_type"] == "kernel_info_reply"
    control_info = kernel.kc.session.msg("kernel_info_request")
    kernel.kc.control_channel.send(control_info)
    reply = kernel.kc.control_channel.get_msg(timeout=5)
    assert reply["msg_type"] == "kernel_info_reply"
    kernel.km.interrupt_kernel()
    assert kernel.shell_reply(msg_id)["content"]["ename"] == "KeyboardInterrupt"


def test_input_round_trip(kernel: Kernel) -> None:
    prompts: list[str] = []

    def answer(msg: dict) -> None:
        prompts.append(msg["content"]["prompt"])
        kernel.kc.input("Ada")

    reply, outputs = kernel.execute("name = input('Who? ')\nprint('hello', name)",
                                    stdin_hook=answer)
    assert reply["status"] == "ok", reply
    assert prompts == ["Who? "]
    assert [o["text"] for o in outputs if o["msg_type"] == "stream"] == ["hello Ada\n"]


def test_input_without_stdin_frontend(kernel: Kernel) -> None:
    reply, _ = kernel.execute("input()")
    assert reply["ename"] == "StdinNotImplementedError"


def test_widget_comm_both_ways(kernel: Kernel) -> None:
    kernel.drain_iopub()
    _, outputs = kernel.execute("import ipywidgets as w\nslider = w.IntSlider(value=1)\nslider")
    opens = [o for o in outputs if o["msg_type"] == "comm_open"
             and o["data"]["state"].get("_model_name") == "IntSliderModel"]
    assert len(opens) == 1
    comm_id = opens[0]["comm_id"]
    view = next(o for o in outputs if o["msg_type"] == "execute_result")
    assert view["data"]["application/vnd.jupyter.widget-view+json"]["model_id"] == comm_id
    # frontend -> kernel: the user drags the slider
    msg = kernel.kc.session.msg("comm_msg", {"comm_id": comm_id, "data": {
        "method": "update", "state": {"value": 7}, "buffer_paths": []}})
    kernel.kc.shell_channel.send(msg)
    kernel.execute("pass")  # runs after the comm message (same session, in order)
    assert kernel.value("slider.value") == "7"
    # kernel -> frontend: code changes the value
    _, outputs = kernel.execute("slider.value = 9")
    updates = [o for o in outputs if o["msg_type"] == "comm_msg" and o["comm_id"] == comm_id]
    assert any(u["data"].get("state", {}).get("value") == 9 for u in updates)
    info = kernel.shell_reply(kernel.kc.comm_info(target_name="jupyter.widget"))
    assert comm_id in info["content"]["comms"]


def test_worker_cannot_read_connection_file_or_signal_parent(kernel: Kernel) -> None:
    connection_file = kernel.km.connection_file
    assert Path(connection_file).read_text()  # the parent can
    code = (f"try:\n    open({connection_file!r}).read()\n    print('READ')\n"
            "except OSError as exc:\n    print(type(exc).__name__)\n")
    _, outputs = kernel.execute(code)
    assert outputs[0]["text"].strip() in ("PermissionError", "FileNotFoundError")
    import psutil
    kernel_pid = kernel.km.provisioner.process.pid
    zygote_pids = [p.pid for p in psutil.Process(kernel_pid).children()]
    assert zygote_pids
    code = (f"import os, signal\nfor pid in {(kernel_pid, *zygote_pids)}:\n"
            "    try:\n        os.kill(pid, signal.SIGKILL)\n        print('KILLED', pid)\n"
            "    except OSError as exc:\n        print(type(exc).__name__)\n")
    _reply, outputs = kernel.execute(code)
    text = "".join(o.get("text", "") for o in outputs)
    assert "KILLED" not in text, text
    assert kernel.km.is_alive()
    assert kernel.value("1 + 1") == "2"


def test_audit_trail_of_cells(kernel: Kernel) -> None:
    code = "audited = sum(range(10))"
    kernel.execute(code)
    kernel.execute("bomb = bytearray(3 * 1024**3)")
    records = kernel.audit()
    digest = hashlib.sha256(code.encode()).hexdigest()
    cell = [r for r in records if r["type"] == "execution" and r["code_sha256"] == digest][-1]
    assert cell["kernel_id"] == kernel.kernel_id
    assert cell["outcome"] == "ok"
    assert cell["limits"]["memory_mb"] == 256 and cell["limits"]["timeout_seconds"] == 4
    assert cell["usage"]["memory_mb"] > 0 and "cpu_seconds" in cell["usage"]
    assert cell["user_id"] and isinstance(cell["execution_count"], int)
    bomb = [r for r in records if r["type"] == "execution"][-1]
    assert bomb["outcome"] == "limit_exceeded" and bomb["limit"] == "memory_mb"
    assert "memory_mb" in bomb["usage"]
    violation = [r for r in records if r["type"] == "violation"][-1]
    assert violation["limit"] == "memory_mb" and violation["code_sha256"] == bomb["code_sha256"]
    assert violation["kernel_id"] == kernel.kernel_id
    assert any(r["type"] == "session" and r.get("event") == "kernel_started"
               and r["kernel_id"] == kernel.kernel_id for r in records)
    assert AuditLog(kernel.audit_path).verify().ok


def test_restart_gives_fresh_session(data_dir: Path, tmp_path: Path) -> None:
    k = Kernel(data_dir, kernel_env(tmp_path))
    try:
        k.execute("before_restart = 1")
        k.km.restart_kernel(now=False)
        k.kc.wait_for_ready(timeout=60)
        reply, _ = k.execute("before_restart")
        assert reply["ename"] == "NameError"
    finally:
        k.close()


def test_message_mode_interrupt(data_dir: Path, tmp_path: Path) -> None:
    k = Kernel(data_dir, kernel_env(tmp_path), name=KERNEL_MSG)
    try:
        assert k.km.kernel_spec.interrupt_mode == "message"
        msg_id = k.kc.execute("print('looping', flush=True)\nwhile True: pass")
        k.wait_stream(msg_id, "looping")
        k.km.interrupt_kernel()
        assert k.shell_reply(msg_id)["content"]["ename"] == "KeyboardInterrupt"
        assert k.value("'alive'") == "'alive'"
    finally:
        k.close()


def test_policy_ceiling_cannot_be_loosened(data_dir: Path, tmp_path: Path) -> None:
    """A user asking for more than the policy allows gets PermissionDenied on every cell; the
    kernel stays up and the refusal is audited."""
    policy = tmp_path / "policy.toml"
    policy.write_text("[ceilings]\nmemory_mb = 128\n")
    env = kernel_env(tmp_path, memory_mb=1024)
    k = Kernel(data_dir, env, extra_arguments=[
        f"--SecureKernel.policy_files={json.dumps([str(policy)])}"])
    try:
        reply, outputs = k.execute("1 + 1")
        assert reply["ename"] == "PermissionDenied"
        assert "ceiling" in reply["evalue"] and "128" in reply["evalue"]
        assert [o["ename"] for o in outputs if o["msg_type"] == "error"] == ["PermissionDenied"]
        records = k.audit()
        assert any(r["type"] == "authorization" and r["allowed"] is False for r in records)
        assert any(r["type"] == "violation" and r["limit"] == "authorization" for r in records)
    finally:
        k.close()


def test_filesystem_access_still_hides_runtime_dir(data_dir: Path, tmp_path: Path) -> None:
    """With the notebook directory granted, the connection file inside it stays unreadable."""
    notebook_dir = tmp_path / "notebooks"
    (notebook_dir / "out").mkdir(parents=True)
    (notebook_dir / "data.txt").write_text("notebook data")
    env = kernel_env(tmp_path, filesystem_access="true")
    env["JUPYTER_RUNTIME_DIR"] = str(notebook_dir / ".runtime")
    k = Kernel(data_dir, env, cwd=notebook_dir)
    try:
        assert Path(k.km.connection_file).parent == notebook_dir / ".runtime"
        assert k.value("open('data.txt').read()") == "'notebook data'"
        reply, _ = k.execute(f"open({k.km.connection_file!r}).read()")
        assert reply["ename"] in ("PermissionError", "FileNotFoundError")  # masked
        reply, _ = k.execute("open('out/written.txt', 'w').write('x')")
        assert reply["status"] == "ok", reply
        assert (notebook_dir / "out" / "written.txt").read_text() == "x"
    finally:
        k.close()


def test_shutdown_leaves_no_worker(data_dir: Path, tmp_path: Path) -> None:
    import psutil
    k = Kernel(data_dir, kernel_env(tmp_path))
    k.execute("1")
    kernel_proc = psutil.Process(k.km.provisioner.process.pid)
    descendants = kernel_proc.children(recursive=True)
    assert descendants  # zygote and session worker
    k.close()
    _gone, alive = psutil.wait_procs(descendants, timeout=10)
    assert not alive
    assert not os.path.exists(k.km.connection_file)
    assert any(r["type"] == "session" and r.get("event") == "kernel_shutdown" for r in k.audit())


def test_restricted_kernel_runs_cells_in_restricted_sandbox(data_dir: Path, tmp_path: Path) -> None:
    k = Kernel(data_dir, kernel_env(tmp_path, timeout_seconds=2),
               extra_arguments=["--SecureKernel.sandbox_type=restricted"])
    try:
        reply, outputs = k.execute("result = sum([1, 2, 3])\nprint('sum is', result)")
        assert reply["status"] == "ok"
        assert outputs[0]["text"] == "sum is 6\n"
        assert outputs[1]["data"]["text/plain"] == "result = 6"
        reply, outputs = k.execute("import os")
        assert reply["ename"] == "SecurityViolation"
        assert [o["ename"] for o in outputs if o["msg_type"] == "error"] == ["SecurityViolation"]
        reply, _ = k.execute("while True: pass")
        assert reply["ename"] == "ResourceLimitExceeded" and "timeout_seconds" in reply["evalue"]
        records = k.audit()
        assert any(r["type"] == "violation" and r["limit"] == "code_policy" for r in records)
        cells = [r for r in records if r["type"] == "execution" and "kernel_id" in r]
        assert {r["sandbox_type"] for r in cells} == {"restricted"}
    finally:
        k.close()


def test_prints_arrive_while_the_cell_still_runs(kernel: Kernel) -> None:
    """Buffered prints are flushed by time, not only at the end of the cell."""
    kernel.drain_iopub()
    msg_id = kernel.kc.execute("print('first')\nprint('second')\nimport time\ntime.sleep(2)")
    text, seen_at = "", None
    while "second" not in text:
        msg = kernel.kc.get_iopub_msg(timeout=10)
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
            text += msg["content"]["text"]
            seen_at = time.monotonic()
    reply = kernel.shell_reply(msg_id)
    assert reply["content"]["status"] == "ok"
    assert seen_at is not None and time.monotonic() - seen_at > 1.0
    assert text == "first\nsecond\n"


def test_display_order_with_streams(kernel: Kernel) -> None:
    _, outputs = kernel.execute(
        "from IPython.display import display\nprint('a')\ndisplay('b')\nprint('c')")
    assert [(o["msg_type"], o.get("text") or o["data"]["text/plain"]) for o in outputs] == [
        ("stream", "a\n"), ("display_data", "'b'"), ("stream", "c\n")]
