"""The parent kernel's trust boundary, tried as an attacker would from a cell: outputs that
would script the browser, frames forged on the worker's channel (floods, deep nesting, input
requests, oversize payloads) and events sent after their cell ended.

A cell reaches the channel the worker writes its frames to (``Worker.chan``) and writes raw
frames to it, as hostile code can.
"""

from __future__ import annotations

import json
import os
import queue
import re
import statistics
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.blocking.client import BlockingKernelClient

from kernel.harness import Kernel, kernel_env

TIMEOUT = 5
MAX_OUTPUT = 100_000
#: The parent's peak RSS may grow by at most this much while a flood runs (what the issue
#: asks: max_output_bytes + 64 MB).
RSS_BOUND = MAX_OUTPUT + 64 * 1024 * 1024
#: No kernel_info probe during a flood may take this long (a starved parent takes the flood's
#: duration, seconds for the 5 s flood; the worst seen healthy, under load 3.7 with three busy
#: loops, was 153 ms on the control channel).
RESPONSIVE = 0.5

FORGE = textwrap.dedent("""
    import gc, json, struct
    from agenticraft.jail.worker import Worker
    from agenticraft.wire import protocol as _protocol
    _w = next(o for o in gc.get_objects() if isinstance(o, Worker))
    def _frame(message, event=True):
        body = json.dumps(message).encode() if not isinstance(message, bytes) else message
        flag = getattr(_protocol, "EVENT_FLAG", 0) if event else 0
        return struct.pack("!I", len(body) | flag) + body
    def _event(data, run=None):
        run = getattr(_w, "run_id", 0) if run is None else run
        return _frame({"ev": "event", "run": run, "data": data})
""")


@pytest.fixture(scope="module")
def boundary(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    tmp = tmp_path_factory.mktemp("boundary")
    env = kernel_env(tmp, timeout_seconds=TIMEOUT, memory_mb=256, max_output_bytes=MAX_OUTPUT)
    k = Kernel(data_dir, env, cwd=tmp)
    yield k
    k.close()


def cell_records(kernel: Kernel) -> list[dict]:
    return [r for r in kernel.audit() if r.get("type") == "execution"
            and r.get("kernel_id") == kernel.kernel_id]


def assert_alive(kernel: Kernel) -> None:
    reply, outputs = kernel.execute("1 + 1")
    assert reply["status"] == "ok", (reply, outputs)
    assert [o["data"]["text/plain"] for o in outputs if o["msg_type"] == "execute_result"] == ["2"]


def parent_rss(kernel: Kernel) -> tuple[int, int]:
    """(current RSS, peak RSS) of the parent kernel process, in bytes."""
    pid = kernel.km.provisioner.process.pid  # type: ignore[union-attr]
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.M))
    return int(fields["VmRSS"]) * 1024, int(fields["VmHWM"]) * 1024


def reset_peak(kernel: Kernel) -> None:
    """Reset the parent's VmHWM so the peak of the next flood is measured on its own."""
    pid = kernel.km.provisioner.process.pid  # type: ignore[union-attr]
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def kernel_info_latency(client: BlockingKernelClient, channel: str) -> float:
    """Seconds from a kernel_info request to the parent's reply on ``channel``: "shell" is
    answered on the kernel's main loop, the one that reads the worker's frames (a flood can
    starve it); "control" on ipykernel's control thread (only the GIL is shared).

    Measured to the reply's header date (the parent's clock; one host): how long this test's
    own process then waits for a CPU under load is not the parent's doing (it was up to 60 of
    a probe's 73 ms with three busy loops on two cores)."""
    msg = client.session.msg("kernel_info_request")
    getattr(client, f"{channel}_channel").send(msg)
    receive = getattr(client, f"get_{channel}_msg")
    while (reply := receive(timeout=10))["parent_header"].get("msg_id") != \
            msg["header"]["msg_id"]:
        pass
    return (reply["header"]["date"] - msg["header"]["date"]).total_seconds()


def probe_latencies(client: BlockingKernelClient, stop: threading.Event
                    ) -> list[tuple[float, float]]:
    """(shell, control) kernel_info latencies, one pair every 20 ms until ``stop`` is set."""
    probes = []
    while not stop.is_set():
        probes.append((kernel_info_latency(client, "shell"),
                       kernel_info_latency(client, "control")))
        stop.wait(0.02)
    return probes


def parent_cpu(kernel: Kernel) -> float:
    """CPU seconds the parent kernel process has used (user + system)."""
    pid = kernel.km.provisioner.process.pid  # type: ignore[union-attr]
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Flood:
    """What a flooding cell did to the parent, all measured in the same run."""

    reply: dict[str, Any]
    seconds: float  # from the first probe (the flood under way) to the cell's reply (sent)
    shell: list[float]  # kernel_info latencies meanwhile, on the shell channel
    control: list[float]  # ... and on the control channel
    idle: float  # median shell kernel_info latency of the same kernel just before the flood
    growth: int  # parent peak RSS growth, bytes

    def __str__(self) -> str:
        ms = [round(x * 1000, 1) for x in self.shell]
        return (f"flood {self.seconds * 1000:.0f} ms; shell kernel_info {ms} ms (idle "
                f"{self.idle * 1000:.1f} ms), control max {max(self.control or [0]) * 1000:.1f} ms")


def run_flood(kernel: Kernel, code: str) -> Flood:
    """Run a flooding cell, probing kernel_info on both channels while it floods, from a
    client of its own (its own session: its own identity on the shell socket). The cell must
    be answered within its timeout + 1 s."""
    kernel.drain_iopub()
    client = BlockingKernelClient()
    client.load_connection_info(kernel.km.get_connection_info())
    client.start_channels()
    try:
        idle = statistics.median(kernel_info_latency(client, "shell") for _ in range(9))
        base, _ = parent_rss(kernel)
        cpu = parent_cpu(kernel)
        reset_peak(kernel)
        msg_id = kernel.kc.execute(FORGE + "print('flooding', flush=True)\n" + code)
        kernel.wait_stream(msg_id, "flooding")
        stop = threading.Event()
        result: list[list[tuple[float, float]]] = []
        probe = threading.Thread(target=lambda: result.append(probe_latencies(client, stop)))
        started_at = datetime.now(UTC)
        probe.start()
        started = time.monotonic()
        try:
            reply = kernel.shell_reply(msg_id, timeout=TIMEOUT + 30)
        finally:
            stop.set()
            probe.join()
    finally:
        client.stop_channels()
    elapsed = time.monotonic() - started
    print(f"\nflood cell answered {elapsed:.1f} s after it started flooding, parent CPU "
          f"{parent_cpu(kernel) - cpu:.2f} s: {reply['content'].get('evalue', '')[:100]}")
    assert elapsed < TIMEOUT + 1
    _, peak = parent_rss(kernel)
    seconds = (reply["header"]["date"] - started_at).total_seconds()
    flood = Flood(reply["content"], seconds, [shell for shell, _ in result[0]],
                  [control for _, control in result[0]], idle, peak - base)
    print(f"\n{flood}; parent peak RSS +{flood.growth / 2**20:.1f} MB")
    return flood


def assert_not_starved(flood: Flood) -> None:
    """The flood did not starve the parent: it answered kernel_info while the flood ran.

    A parent that reads the flood before answering takes about the flood's own duration to
    answer (measured with the loop's yields removed, three busy loops on two cores: 71-199 ms
    for floods of 75-202 ms); one that interleaves answers in a few ms (medians 2-15 ms for
    floods of 108-322 ms, at most a tenth of the flood; the old fixed 100 ms bound on the worst
    probe flaked at 104-107 ms in CI and passed starved floods of 60-100 ms). So the median
    probe must be under a third of the same flood's duration, and no probe may wait
    ``RESPONSIVE`` (on either channel). The shell channel's kernel_info is the one that shows
    starvation: the control channel's is answered on ipykernel's control thread, which a
    starved main loop does not delay (the old test probed only control and passed with the
    yields removed).
    """
    assert flood.shell, flood
    assert statistics.median(flood.shell) < flood.seconds / 3, flood
    assert max(flood.shell + flood.control) < RESPONSIVE, flood


# -- output that cannot script the browser ------------------------------------------------------
def test_scripts_in_outputs_are_removed_with_one_note_and_audited(boundary: Kernel) -> None:
    code = textwrap.dedent("""
        from IPython.display import HTML, SVG, Javascript, display
        display(HTML('<b>kept</b><script>window.pwned = 1</script>'
                     '<img src="x" onerror="window.pwned = 2">'
                     '<a href="javascript:window.pwned = 3">link</a>'))
        display(SVG('<svg xmlns="http://www.w3.org/2000/svg"><script>window.pwned = 4</script>'
                    '<circle r="5" onload="window.pwned = 5"/></svg>'))
        display(Javascript('window.pwned = 6'))
        display({'text/html': '<iframe src="https://example.org"></iframe>ok',
                 'application/vnd.bokehjs_exec.v0+json': {}}, raw=True)
    """)
    reply, outputs = boundary.execute(code)
    assert reply["status"] == "ok", reply
    shown = json.dumps([o for o in outputs if o["msg_type"] == "display_data"])
    assert "<b>kept</b>" in shown and "<circle" in shown
    for active in ("<script", "onerror", "onload", "javascript:", "<iframe", "window.pwned",
                   "application/javascript", "bokehjs"):
        assert active not in shown, active
    notes = [o for o in outputs if o["msg_type"] == "stream" and "removed active content"
             in o["text"]]
    assert len(notes) == 1, outputs
    record = cell_records(boundary)[-1]
    assert any("application/javascript" in what for what in record["output_removed"])
    assert any("text/html" in what for what in record["output_removed"])


def test_ordinary_rich_output_is_untouched(boundary: Kernel) -> None:
    reply, outputs = boundary.execute(
        "from IPython.display import HTML, Image, display\n"
        "display(HTML('<table><tr><th>a</th></tr><tr><td>1</td></tr></table>'))\n"
        "display({'image/png': 'iVBORw0KGgo=', 'application/json': {'a': [1, 2]}}, raw=True)")
    assert reply["status"] == "ok"
    assert not [o for o in outputs if o["msg_type"] == "stream"], outputs
    data = [o["data"] for o in outputs if o["msg_type"] == "display_data"]
    assert "<td>1</td>" in data[0]["text/html"]
    assert data[1] == {"image/png": "iVBORw0KGgo=", "application/json": {"a": [1, 2]}}


# -- budgets before work --------------------------------------------------------------------------
def test_deeply_nested_frame_ends_the_cell_with_an_error_reply_and_record(
        boundary: Kernel) -> None:
    before = len(cell_records(boundary))
    code = FORGE + textwrap.dedent("""
        body = (b'{"ev":"event","run":%d,"data":{"type":"display_data","data":'
                % getattr(_w, "run_id", 0) + b'[' * 50000 + b']' * 50000 + b'}}')
        _w.chan.sendall(_frame(body))
        import time; time.sleep(60)
    """)
    started = time.monotonic()
    reply, outputs = boundary.execute(code, timeout=TIMEOUT + 30)
    assert time.monotonic() - started < TIMEOUT + 1
    assert reply["status"] == "error"
    assert [o for o in outputs if o["msg_type"] == "error"], outputs
    assert "nest" in reply["evalue"], reply
    records = cell_records(boundary)
    assert len(records) == before + 1 and records[-1]["outcome"] == "sandbox_error"
    violation = [r for r in boundary.audit() if r.get("type") == "violation"][-1]
    assert violation["limit"] == "worker_protocol" and "nest" in violation["detail"]
    assert_alive(boundary)


def test_flood_of_tiny_frames_keeps_the_parent_responsive_and_small(boundary: Kernel) -> None:
    code = textwrap.dedent("""
        tiny = _event({"type": "display_data", "data": {"text/plain": "x"}, "metadata": {}})
        burst = tiny * 2000
        while True:
            _w.chan.sendall(burst)
    """)
    flood = run_flood(boundary, code)
    assert flood.reply["status"] == "error", flood.reply
    assert "flood" in flood.reply["evalue"], flood.reply  # the frame budget, not the timeout
    assert [r for r in boundary.audit() if r.get("limit") == "worker_protocol"
            and "flood" in r["detail"]]
    assert_not_starved(flood)
    assert flood.growth < RSS_BOUND, flood.growth
    assert_alive(boundary)


def test_flood_at_the_allowed_rate_for_the_whole_timeout(boundary: Kernel) -> None:
    # just under the frame rate the budget allows: the cell runs until its timeout, and the
    # parent keeps answering while it drops output past the cap
    code = textwrap.dedent("""
        import time
        tiny = _event({"type": "display_data", "data": {"text/plain": "x"}, "metadata": {}})
        while True:
            _w.chan.sendall(tiny * 400)
            time.sleep(0.1)
    """)
    flood = run_flood(boundary, code)
    assert flood.reply["status"] == "error", flood.reply
    assert "timeout_seconds" in flood.reply["evalue"], flood.reply
    assert len(flood.shell) > 20, flood
    assert_not_starved(flood)
    assert flood.growth < RSS_BOUND, flood.growth
    assert_alive(boundary)


def test_flood_of_expanding_json_keeps_the_parent_small(boundary: Kernel) -> None:
    # [[],[],...] expands ~20x when decoded: frames as large as the budget lets through,
    # then far larger ones, which must be dropped undecoded.
    code = textwrap.dedent("""
        small = _event({"type": "display_data", "data": {"application/json": [[]] * 30000}})
        big = _event({"type": "display_data", "data": {"application/json": [[]] * 3000000}})
        while True:
            _w.chan.sendall(small)
            _w.chan.sendall(big)
    """)
    flood = run_flood(boundary, code)
    assert flood.reply["status"] == "error", flood.reply
    assert_not_starved(flood)
    assert flood.growth < RSS_BOUND, flood.growth
    assert_alive(boundary)


def test_input_request_flood_is_survived_with_one_request_outstanding(boundary: Kernel) -> None:
    boundary.drain_iopub()
    code = FORGE + textwrap.dedent("""
        ask = _event({"type": "input_request", "prompt": "? ", "password": False})
        for _ in range(200):
            _w.chan.sendall(ask * 100)
        import time; time.sleep(60)
    """)
    msg_id = boundary.kc.execute(code, allow_stdin=True)
    reply = boundary.shell_reply(msg_id, timeout=TIMEOUT + 30)["content"]
    assert reply["status"] == "error"
    assert "control events" in reply["evalue"], reply  # the event budget, not the timeout
    requests = 0
    while True:
        try:
            msg = boundary.kc.get_stdin_msg(timeout=0.5)
        except queue.Empty:
            break
        requests += msg["msg_type"] == "input_request"
    assert requests == 1
    assert_alive(boundary)


def test_huge_payload_is_cut(boundary: Kernel) -> None:
    reply, _ = boundary.execute(
        "get_ipython().payload_manager.write_payload("
        "{'source': 'page', 'data': {'text/plain': 'x' * 30_000_000}, 'start': 0})")
    assert len(json.dumps(reply)) < MAX_OUTPUT
    assert reply.get("payload", []) == []
    assert reply["status"] == "error" and "max_output_bytes" in reply["evalue"]
    assert_alive(boundary)


def test_payload_over_the_cap_is_dropped_and_unknown_kinds_never_pass(boundary: Kernel) -> None:
    reply, outputs = boundary.execute(
        "pm = get_ipython().payload_manager\n"
        "pm.write_payload({'source': 'page', 'data': {'text/plain': 'x' * 300_000}, 'start': 0})\n"
        "pm.write_payload({'source': 'evil', 'data': {}})")
    assert reply["status"] == "ok"
    assert reply["payload"] == [] and len(json.dumps(reply)) < MAX_OUTPUT
    assert any("payload" in o.get("text", "") for o in outputs if o["msg_type"] == "stream")
    reply, _ = boundary.execute(
        "get_ipython().payload_manager.write_payload({'source': 'page', 'start': 0,\n"
        "    'data': {'text/html': '<script>window.pwned=1</script><b>help</b>'}})")
    assert reply["payload"] == [{"source": "page", "start": 0,
                                 "data": {"text/html": "<b>help</b>"}}], reply


def test_forged_debugger_events_reach_iopub_only_as_dap_events(boundary: Kernel) -> None:
    """A cell writes debug_event frames as debugpy's would be: an unknown event never reaches
    the frontend, a known one only with its DAP fields."""
    boundary.drain_iopub()
    msg_id = boundary.kc.execute(FORGE + textwrap.dedent("""
        for content in (
                {"type": "event", "event": "debugpySockets", "body": {"sockets": [1]}},
                {"type": "event", "event": "stopped", "x-forged": "<script>1</script>",
                 "body": {"reason": "breakpoint", "threadId": 1, "forged": {"deep": 1}}},
                {"type": "event", "event": "initialized", "body": {"smuggled": "x"}}):
            _w.emit({"type": "debug_event", "content": content})
        print("sent", flush=True)
    """))
    events = []
    while True:
        msg = boundary.kc.get_iopub_msg(timeout=30)
        if msg["msg_type"] == "debug_event":
            events.append(msg["content"])
        if (msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status"
                and msg["content"]["execution_state"] == "idle"):
            break
    assert boundary.shell_reply(msg_id)["content"]["status"] == "ok"
    assert events == [{"type": "event", "event": "stopped",
                       "body": {"reason": "breakpoint", "threadId": 1}},
                      {"type": "event", "event": "initialized", "body": {}}], events


# -- run-tagged events ----------------------------------------------------------------------------
def test_events_of_a_finished_cell_never_appear_in_the_next(boundary: Kernel) -> None:
    # A thread of the first cell sends its events while the second cell runs (they meet through
    # pipes the second cell inherits): one from the thread, one tagged with the first run.
    reply, _ = boundary.execute(FORGE + textwrap.dedent("""
        import os, threading
        old = getattr(_w, "run_id", 0)
        fake = {"type": "error", "ename": "ResourceLimitExceeded", "evalue": "fake",
                "traceback": []}
        running_r, running_w = os.pipe()
        sent_r, sent_w = os.pipe()
        def later():
            os.read(running_r, 1)                   # the second cell is running
            _w.emit(fake)                           # from a thread, after its cell ended
            _w.chan.sendall(_event(fake, run=old))  # tagged with the finished run
            os.write(sent_w, b"s")
        threading.Thread(target=later, daemon=True).start()
    """))
    assert reply["status"] == "ok"
    reply, outputs = boundary.execute(textwrap.dedent("""
        os.write(running_w, b"r")
        os.read(sent_r, 1)
        print("done")  # after the stale frames on the channel
    """))
    assert reply["status"] == "ok", reply
    assert "fake" not in json.dumps(outputs), outputs
    assert "done" in json.dumps(outputs)
