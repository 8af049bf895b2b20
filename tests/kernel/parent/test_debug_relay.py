"""``DebugRelay``: the parent's side of the debugger trusts nothing the worker sends. A reply is
taken only for a request that waits for one, only as a response to that request; a rich variable
view is cleaned like any output; a worker that does not answer gets the frontend a failed
response, never a hang; a reply that comes after its cell ended is collected with a run."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agenticraft_kernel.parent import debug as debug_module
from agenticraft_kernel.parent.debug import DebugRelay, code_of
from agenticraft_kernel.parent.output_policy import OutputPolicy

SCRIPT = "<img src=x onerror=alert(1)><script>alert(2)</script>"


class Worker:
    """A fake worker: ``running`` says whether a cell runs; control frames are recorded."""

    def __init__(self, running: bool = True) -> None:
        self.running = running
        self.sent: list[dict[str, Any]] = []
        self.runs: list[dict[str, Any] | None] = []
        self.published: list[dict[str, Any]] = []
        self.answer: Any = None
        self.sent_event = asyncio.Event()

    async def run(self, dap: dict[str, Any] | None) -> Any:
        self.runs.append(dap)
        return self.answer

    def send(self, frame: dict[str, Any]) -> None:
        self.sent.append(frame)
        self.sent_event.set()

    def relay(self) -> DebugRelay:
        return DebugRelay(self.run, self.send, lambda: self.running, self.published.append,
                          OutputPolicy)


def request(command: str, **arguments: Any) -> dict[str, Any]:
    return {"type": "request", "seq": 7, "command": command, "arguments": arguments}


async def test_between_cells_a_request_is_a_run_and_its_reply_is_checked() -> None:
    worker = Worker(running=False)
    relay = worker.relay()
    worker.answer = {"type": "response", "command": "debugInfo", "success": True}
    assert (await relay.request(request("debugInfo")))["success"]
    worker.answer = {"type": "response", "command": "setBreakpoints", "success": True}
    reply = await relay.request(request("debugInfo"))
    assert not reply["success"] and "another debugger request" in reply["message"]
    worker.answer = "not a dict"
    assert not (await relay.request(request("debugInfo")))["success"]


async def test_while_a_cell_runs_only_the_awaited_reply_is_taken() -> None:
    worker = Worker()
    relay = worker.relay()
    task = asyncio.ensure_future(relay.request(request("stackTrace", threadId=1)))
    await worker.sent_event.wait()
    frame = worker.sent[0]
    assert frame["op"] == "control" and frame["request"]["command"] == "stackTrace"
    relay.from_worker("debug_reply", {"id": frame["id"] + 1, "content": {"command": "x"}})
    relay.from_worker("debug_reply", {"id": str(frame["id"]), "content": {}})  # not an int
    relay.from_worker("debug_reply", {"id": frame["id"], "content": "forged"})
    assert not task.done()
    relay.from_worker("debug_reply", {"id": frame["id"], "content": {
        "type": "response", "command": "stackTrace", "success": True, "body": {}}})
    assert (await task)["success"]
    relay.from_worker("debug_reply", {"id": frame["id"], "content": {"command": "stackTrace"}})


async def test_rich_variable_views_are_cleaned_like_outputs() -> None:
    worker = Worker()
    relay = worker.relay()
    task = asyncio.ensure_future(relay.request(request("richInspectVariables",
                                                       variableName="x")))
    await worker.sent_event.wait()
    relay.from_worker("debug_reply", {"id": worker.sent[0]["id"], "content": {
        "type": "response", "command": "richInspectVariables", "success": True,
        "body": {"data": {"text/html": SCRIPT, "text/plain": "x"},
                 "metadata": {"text/html": {}, "other": 1}}}})
    body = (await task)["body"]
    assert "onerror" not in str(body) and "<script" not in str(body)
    assert body["data"]["text/plain"] == "x"
    assert set(body["metadata"]) <= set(body["data"])


async def test_events_are_published_only_as_dap_events() -> None:
    worker = Worker()
    relay = worker.relay()
    relay.from_worker("debug_event", {"content": {"type": "event", "event": "stopped",
                                                  "body": {"threadId": 1}}})
    relay.from_worker("debug_event", {"content": {"type": "response", "event": "stopped"}})
    relay.from_worker("debug_event", {"content": ["not", "a", "dict"]})
    assert [e["event"] for e in worker.published] == ["stopped"]


def test_what_debugpy_sends_reaches_the_frontend_unchanged() -> None:
    """The events of a real session (as ipykernel forwards debugpy's) pass whole."""
    worker = Worker()
    relay = worker.relay()
    sent = [
        {"seq": 3, "type": "event", "event": "initialized"},
        {"seq": 4, "type": "event", "event": "process", "body": {
            "name": "/usr/bin/python3", "systemProcessId": 2, "isLocalProcess": True,
            "startMethod": "attach", "pointerSize": 64}},
        {"seq": 5, "type": "event", "event": "thread", "body": {"reason": "started",
                                                                 "threadId": 1}},
        {"seq": 9, "type": "event", "event": "stopped", "body": {
            "reason": "breakpoint", "threadId": 1, "preserveFocusHint": False,
            "allThreadsStopped": True, "hitBreakpointIds": [0]}},
        {"seq": 10, "type": "event", "event": "continued", "body": {
            "threadId": 1, "allThreadsContinued": True}},
        {"seq": 11, "type": "event", "event": "output", "body": {
            "category": "stdout", "output": "sum 42\n",
            "source": {"path": "/tmp/ipykernel/123.py", "sourceReference": 0}, "line": 3}},
        {"seq": 12, "type": "event", "event": "breakpoint", "body": {
            "reason": "changed", "breakpoint": {"id": 0, "verified": True, "line": 3,
                                                "source": {"path": "/tmp/x.py"}}}},
        {"seq": 13, "type": "event", "event": "module", "body": {
            "reason": "new", "module": {"id": "a", "name": "m", "path": "/tmp/m.py"}}},
        {"seq": 14, "type": "event", "event": "loadedSource", "body": {
            "reason": "new", "source": {"name": "m.py", "path": "/tmp/m.py"}}},
        {"seq": 15, "type": "event", "event": "exited", "body": {"exitCode": 0}},
        {"seq": 16, "type": "event", "event": "terminated"},
    ]
    for content in sent:
        relay.from_worker("debug_event", {"content": content})
    assert worker.published == sent
    assert relay.dropped == 0


def test_unknown_events_and_fields_are_dropped_and_counted() -> None:
    worker = Worker()
    relay = worker.relay()
    forged = [
        {"type": "event", "event": "debugpySockets", "body": {"sockets": [{"port": 5678}]}},
        {"type": "event", "event": "runInTerminal", "body": {"args": ["sh"]}},
        {"type": "event", "event": "stopped", "seq": 1, "x-html": "<script>1</script>",
         "body": {"reason": "step", "threadId": 1, "description": SCRIPT + "ok",
                  "extra": {"deep": [1, 2]}, "allThreadsStopped": "yes",
                  "hitBreakpointIds": [1, "2", True]}},
        {"type": "event", "event": "output", "body": {
            "category": "stdout", "output": "x", "data": {"any": "thing"},
            "source": {"path": "/p", "adapterData": {"a": 1}, "sources": [{}]}}},
        {"type": "event", "event": "initialized", "body": {"smuggled": "x"}},
        {"type": "event", "event": "terminated", "body": {"restart": {"code": "..."}}},
        {"type": "event", "event": "continued", "seq": "1", "body": "not a dict"},
        {"type": "event", "event": ["stopped"]},
    ]
    for content in forged:
        relay.from_worker("debug_event", {"content": content})
    assert worker.published == [
        {"type": "event", "event": "stopped", "seq": 1,
         "body": {"reason": "step", "threadId": 1, "description": SCRIPT + "ok",
                  "hitBreakpointIds": [1]}},
        {"type": "event", "event": "output", "body": {"category": "stdout", "output": "x",
                                                      "source": {"path": "/p"}}},
        {"type": "event", "event": "initialized", "body": {}},
        {"type": "event", "event": "terminated", "body": {}},
        {"type": "event", "event": "continued"},
    ]
    # 2 events + (x-html, extra, allThreadsStopped, "2", True) + (data, adapterData, sources)
    # + smuggled + restart + (seq, body) + 1 event
    assert relay.dropped == 2 + 5 + 3 + 1 + 1 + 2 + 1


async def test_a_silent_worker_gets_a_failed_response(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(debug_module, "REPLY_TIMEOUT", 0.2)
    monkeypatch.setattr(debug_module, "COLLECT_EVERY", 0.05)
    worker = Worker()
    reply = await worker.relay().request(request("continue", threadId=1))
    assert not reply["success"] and "in time" in reply["message"]
    assert worker.runs == []  # the cell still runs: nothing to collect with


async def test_a_reply_after_its_cell_ended_is_collected_with_a_run(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(debug_module, "COLLECT_EVERY", 0.05)
    worker = Worker()
    relay = worker.relay()

    async def collect(dap: dict[str, Any] | None) -> Any:
        worker.runs.append(dap)  # the worker sends the kept reply with this run
        relay.from_worker("debug_reply", {"id": worker.sent[0]["id"], "content": {
            "type": "response", "command": "next", "success": True}})
        return {}

    relay._run = collect
    task = asyncio.ensure_future(relay.request(request("next", threadId=1)))
    await worker.sent_event.wait()
    worker.running = False  # the cell ended before the reply came
    assert (await task)["success"]
    assert worker.runs == [None]


def test_breakpoints_that_run_code_name_it_for_the_audit() -> None:
    """A condition, a hit condition and a log message's braces run in the sandbox each time
    their breakpoint is hit: audited like the debug console's expressions."""
    assert code_of(request("setBreakpoints", source={"path": "/tmp/c.py"}, breakpoints=[
        {"line": 2}, {"line": 3, "condition": "a > 1"},
        {"line": 5, "hitCondition": ">= 3", "logMessage": "a is {a}"}])) == (
        "/tmp/c.py:3: condition=a > 1 | /tmp/c.py:5: hitCondition=>= 3; logMessage=a is {a}")
    assert code_of(request("setFunctionBreakpoints", breakpoints=[
        {"name": "f", "condition": "x"}])) == "f: condition=x"
    assert code_of(request("setExceptionBreakpoints", filters=[], filterOptions=[
        {"filterId": "raised", "condition": "True"}])) == "raised: condition=True"
    assert code_of(request("evaluate", expression="a * 10")) == "expression=a * 10"


def test_requests_that_run_no_code_are_not_audited() -> None:
    assert code_of(request("setBreakpoints", source={"path": "/p"},
                           breakpoints=[{"line": 2}, {"line": 3, "condition": ""}])) is None
    assert code_of(request("setBreakpoints", breakpoints="not a list")) is None
    assert code_of(request("stackTrace", threadId=1)) is None
    assert code_of({"command": ["unhashable"], "arguments": []}) is None
