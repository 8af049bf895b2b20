"""JupyterLab's debugger through jupyter_client: the DAP sequence JupyterLab sends (initialize,
attach, configurationDone, debugInfo, dumpCell, setBreakpoints), a cell that stops at a
breakpoint (a ``stopped`` debug_event on IOPub), its stack, scopes and a local variable's value
while the cell is held, ``continue``, and the cell completing. The debugger runs inside the
sandbox: debugpy's adapter is a process of the sandbox, and none of its sockets is on the host.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kernel.harness import Kernel, kernel_env

pytestmark = pytest.mark.timeout(240)

TIMEOUT = 60
_seq = itertools.count(1)

CODE = """def f(a, b):
    c = a + b
    return c

result = f(2, 3)
print("done", result)"""

INITIALIZE = {"clientID": "test-client", "clientName": "testClient", "adapterID": "",
              "pathFormat": "path", "linesStartAt1": True, "columnsStartAt1": True,
              "supportsVariableType": True, "supportsVariablePaging": True,
              "supportsRunInTerminalRequest": True, "locale": "en"}


def debug(kernel: Kernel, command: str, arguments: dict[str, Any] | None = None,
          ) -> dict[str, Any]:
    """One debug_request on the control channel; its debug_reply's content."""
    msg = kernel.kc.session.msg("debug_request", {"type": "request", "seq": next(_seq),
                                                  "command": command,
                                                  "arguments": arguments or {}})
    kernel.kc.control_channel.send(msg)
    deadline = time.monotonic() + TIMEOUT
    while True:
        reply = kernel.kc.control_channel.get_msg(timeout=max(0.01, deadline - time.monotonic()))
        if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
            assert reply["msg_type"] == "debug_reply"
            return reply["content"]


def debug_event(kernel: Kernel, event: str, seen: list[dict[str, Any]]) -> dict[str, Any]:
    deadline = time.monotonic() + TIMEOUT
    while True:
        msg = kernel.kc.get_iopub_msg(timeout=max(0.01, deadline - time.monotonic()))
        seen.append(msg)
        if msg["msg_type"] == "debug_event" and msg["content"].get("event") == event:
            return msg["content"]


@pytest.fixture(scope="module")
def debug_kernel(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    tmp = tmp_path_factory.mktemp("debugger")
    k = Kernel(data_dir, kernel_env(tmp, memory_mb=512, timeout_seconds=120), cwd=tmp)
    yield k
    k.close()


def test_the_kernel_advertises_the_debugger(debug_kernel: Kernel) -> None:
    debug_kernel.kc.kernel_info()
    reply = debug_kernel.kc.get_shell_msg(timeout=TIMEOUT)
    assert "debugger" in reply["content"]["supported_features"]


def test_breakpoint_stops_the_cell_and_shows_its_local_variables(debug_kernel: Kernel) -> None:
    k = debug_kernel
    assert debug(k, "initialize", INITIALIZE)["success"]
    assert debug(k, "attach")["success"]
    assert debug(k, "configurationDone")["success"]
    info = debug(k, "debugInfo")["body"]
    assert info["isStarted"]
    source = debug(k, "dumpCell", {"code": CODE})["body"]["sourcePath"]
    assert source.startswith(info["tmpFilePrefix"])
    reply = debug(k, "setBreakpoints", {"breakpoints": [{"line": 2}],
                                        "source": {"path": source}, "sourceModified": False})
    assert reply["success"] and reply["body"]["breakpoints"][0]["verified"]
    assert debug(k, "debugInfo")["body"]["breakpoints"] == [
        {"source": source, "breakpoints": [{"line": 2}]}]

    msg_id = k.kc.execute(CODE)
    seen: list[dict[str, Any]] = []
    stopped = debug_event(k, "stopped", seen)
    assert stopped["body"]["reason"] == "breakpoint"
    thread = stopped["body"]["threadId"]
    assert debug(k, "debugInfo")["body"]["stoppedThreads"] == [thread]

    frames = debug(k, "stackTrace", {"threadId": thread})["body"]["stackFrames"]
    assert frames[0]["name"] == "f" and frames[0]["line"] == 2
    assert frames[0]["source"]["path"] == source
    scopes = debug(k, "scopes", {"frameId": frames[0]["id"]})["body"]["scopes"]
    local = next(s for s in scopes if s["name"] == "Locals")
    variables = debug(k, "variables", {"variablesReference": local["variablesReference"]})
    values = {v["name"]: v["value"] for v in variables["body"]["variables"]}
    assert values == {"a": "2", "b": "3"}
    rich = debug(k, "richInspectVariables", {"variableName": "a", "frameId": frames[0]["id"]})
    assert rich["success"] and rich["body"]["data"]["text/plain"] == "2"

    # the debug console runs code in the sandbox: answered, and audited (it is not a cell)
    result = debug(k, "evaluate", {"expression": "a * 10 + b", "frameId": frames[0]["id"],
                                   "context": "repl"})
    assert result["body"]["result"] == "23"
    assert any(r.get("event") == "debug_code" and r.get("command") == "evaluate"
               and "a * 10 + b" in r.get("code", "") for r in k.audit())

    assert debug(k, "continue", {"threadId": thread})["success"]
    reply = k.shell_reply(msg_id, timeout=TIMEOUT)
    assert reply["content"]["status"] == "ok"
    assert k.value("result") == "5"
    # between cells: the globals JupyterLab's variables panel shows
    names = {v["name"]: v["value"] for v in debug(k, "inspectVariables")["body"]["variables"]}
    assert names["result"] == "5"


LISTENING = """
def listening(path):
    found = set()
    for line in open(path).read().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A":  # TCP_LISTEN
            found.add(int(fields[9]))  # the socket's inode (unique across namespaces)
    return sorted(found)
import json, os
adapters = [p for p in os.listdir("/proc") if p.isdigit()
            and b"debug_adapter" in open(f"/proc/{p}/cmdline", "rb").read()]
print(json.dumps([listening("/proc/net/tcp"), len(adapters)]))
"""


def host_listening() -> set[int]:
    with open("/proc/net/tcp") as table:
        return {int(line.split()[9]) for line in table.read().splitlines()[1:]
                if line.split()[3] == "0A"}


def test_the_debugger_lives_inside_the_sandbox(debug_kernel: Kernel) -> None:
    """debugpy's adapter is a process of the sandbox, and its listening sockets are on the
    loopback of the sandbox's own network namespace: none of them is on the host's."""
    k = debug_kernel
    assert debug(k, "debugInfo")["body"]["isStarted"]
    reply, outputs = k.execute(LISTENING)
    assert reply["status"] == "ok", outputs
    text = "".join(o.get("text", "") for o in outputs if o["msg_type"] == "stream")
    inodes, adapters = json.loads(text)
    assert adapters >= 1
    assert inodes, "debugpy listens nowhere in the sandbox"
    assert not set(inodes) & host_listening()


def test_a_breakpoint_condition_runs_in_the_sandbox_and_is_audited(debug_kernel: Kernel) -> None:
    """A condition is code the sandbox runs each time its breakpoint is hit (here it leaves a
    trace and never stops): the request that sets it is a ``debug_code`` record."""
    k = debug_kernel
    source = debug(k, "dumpCell", {"code": CODE})["body"]["sourcePath"]
    condition = "__import__('builtins').__dict__.setdefault('seen', []).append(a)"
    reply = debug(k, "setBreakpoints", {"breakpoints": [{"line": 2, "condition": condition}],
                                        "source": {"path": source}, "sourceModified": False})
    assert reply["success"]
    try:
        reply, outputs = k.execute(CODE)
        assert reply["status"] == "ok", outputs
        assert k.value("seen") == "[2]"
    finally:
        assert debug(k, "setBreakpoints", {"breakpoints": [], "source": {"path": source},
                                           "sourceModified": False})["success"]
    records = [r for r in k.audit() if r.get("event") == "debug_code"
               and r.get("command") == "setBreakpoints"]
    assert len(records) == 1 and records[0]["code"] == f"{source}:2: condition={condition}"


def test_undo_is_refused_once_the_debugger_runs(debug_kernel: Kernel) -> None:
    """The debugger's threads live in the session's worker: its cells are not forked from a
    checkpoint, so there is no state to go back to, and the kernel says why."""
    reply, _ = debug_kernel.execute("%secure_undo")
    assert reply["status"] == "error"
    assert "debugger" in reply["evalue"]


def test_disconnect_then_cells_run(debug_kernel: Kernel) -> None:
    k = debug_kernel
    assert debug(k, "disconnect", {"restart": False, "terminateDebuggee": True})["success"]
    assert not debug(k, "debugInfo")["body"]["isStarted"]
    assert k.value("1 + 1") == "2"


def test_no_debugger_when_switched_off(data_dir: Path,
                                       tmp_path_factory: pytest.TempPathFactory) -> None:
    """``enable_debugger=False``: the worker keeps Unix sockets only, the kernel advertises no
    debugger and refuses debug requests saying why."""
    tmp = tmp_path_factory.mktemp("nodebugger")
    k = Kernel(data_dir, kernel_env(tmp), cwd=tmp,
               extra_arguments=["--SecureKernel.enable_debugger=False"])
    try:
        assert "debugger" not in k.shell_reply(k.kc.kernel_info())["content"][
            "supported_features"]
        reply = debug(k, "initialize", INITIALIZE)
        assert not reply["success"] and "switched off" in reply["message"]
        reply, outputs = k.execute("import socket\nsocket.socket(socket.AF_INET)")
        assert reply["status"] == "error" and reply["ename"] == "PermissionError", outputs
    finally:
        k.close()
