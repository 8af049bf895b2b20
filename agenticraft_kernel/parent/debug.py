"""Parent side: the JupyterLab debugger's ``debug_request``s, relayed to the worker.

The debugger itself (ipykernel's ``Debugger`` and a debugpy adapter) runs inside the sandbox
(``agenticraft_kernel.worker.debugger``); this side only carries DAP messages. A request goes as
a ``debug`` run when no cell runs, and as a ``control`` frame to the worker's channel thread when
one does (it may be held at a breakpoint: the request must not wait for the cell). Its reply
then comes back as an event of that cell, matched here by id. debugpy's events are published
on IOPub as ``debug_event``: only the standard DAP events, with their specified fields
(``parent.dap_events``).

Everything from the worker is the attacker's data: a reply is accepted only for a request that
is waiting for one and must be a DAP response to it; a rich variable view (a mime bundle the
browser renders) passes the output policy like any output; every frame has already passed the
supervisor's size and rate budget.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from agenticraft_kernel.parent.dap_events import clean_event
from agenticraft_kernel.parent.output_policy import OutputPolicy

log = logging.getLogger(__name__)

#: How long the parent waits for the worker's answer to one request.
REPLY_TIMEOUT = 30.0
#: While a reply is outstanding after its cell ended, how often to collect it with a run.
COLLECT_EVERY = 0.5


#: DAP requests that run code in the sandbox when they are made, and the arguments holding it.
CODE_COMMANDS = frozenset({"evaluate", "setExpression", "setVariable", "copyToGlobals"})
CODE_ARGUMENTS = ("expression", "name", "value", "srcVariableName", "dstVariableName")
#: Requests that install code the sandbox runs each time a breakpoint is hit (a condition, a hit
#: condition, the expressions in a log message's braces): the argument listing the breakpoints,
#: and the field naming each one.
BREAKPOINT_COMMANDS = {"setBreakpoints": ("breakpoints", "line"),
                       "setFunctionBreakpoints": ("breakpoints", "name"),
                       "setExceptionBreakpoints": ("filterOptions", "filterId"),
                       "setDataBreakpoints": ("breakpoints", "dataId"),
                       "setInstructionBreakpoints": ("breakpoints", "instructionReference")}
BREAKPOINT_CODE = ("condition", "hitCondition", "logMessage")


def code_of(dap: dict[str, Any]) -> str | None:
    """The code ``dap`` makes the sandbox run, as audited (``debug_code``); None for none."""
    command = dap.get("command")
    if not isinstance(command, str):
        return None
    arguments = dap.get("arguments") if isinstance(dap.get("arguments"), dict) else {}
    if command in CODE_COMMANDS:
        return "; ".join(f"{k}={arguments[k]}" for k in CODE_ARGUMENTS
                         if isinstance(arguments.get(k), str))
    if command not in BREAKPOINT_COMMANDS:
        return None
    listing, label = BREAKPOINT_COMMANDS[command]
    items = arguments.get(listing)
    if not isinstance(items, list):
        return None
    source = arguments.get("source") if isinstance(arguments.get("source"), dict) else {}
    path = f"{source['path']}:" if isinstance(source.get("path"), str) else ""
    parts = []
    for item in items:
        if not isinstance(item, dict):
            continue
        code = "; ".join(f"{k}={item[k]}" for k in BREAKPOINT_CODE
                         if isinstance(item.get(k), str) and item[k])
        if code:
            parts.append(f"{path}{item.get(label)}: {code}")
    return " | ".join(parts) or None


def failed(request: dict[str, Any], message: str) -> dict[str, Any]:
    """A DAP error response to ``request`` (what the frontend shows)."""
    return {"type": "response", "seq": 0, "request_seq": request.get("seq", 0),
            "success": False, "command": str(request.get("command", "")), "message": message}


class DebugRelay:
    """One kernel's debug requests (see the module docstring).

    ``run(dap)`` makes a ``debug`` run (``dap`` None only collects late replies) and returns the
    worker's DAP reply; ``send(frame)`` writes a control frame; ``running()`` says whether a cell
    runs; ``publish(content)`` sends one IOPub ``debug_event``.
    """

    def __init__(self, run: Callable[[dict[str, Any] | None], Awaitable[dict[str, Any]]],
                 send: Callable[[dict[str, Any]], None], running: Callable[[], bool],
                 publish: Callable[[dict[str, Any]], None],
                 policy: Callable[[], OutputPolicy]) -> None:
        self._run = run
        self._send = send
        self._running = running
        self._publish = publish
        self._policy = policy
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[dict[str, Any], asyncio.Future[dict[str, Any]]]] = {}
        #: Events, and fields of events, the worker sent that did not reach the frontend.
        self.dropped = 0

    async def request(self, dap: dict[str, Any]) -> dict[str, Any]:
        """The DAP reply to ``dap``, whatever the worker does (a failed response if it does
        not answer in time)."""
        if not self._running():
            return self._checked(dap, await self._run(dap))
        ident = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = (dap, future)
        try:
            self._send({"op": "control", "kind": "debug", "id": ident, "request": dap})
            return await self._wait(future)
        except TimeoutError:
            return failed(dap, "the sandbox did not answer this debugger request in time")
        finally:
            self._pending.pop(ident, None)

    async def _wait(self, future: asyncio.Future[dict[str, Any]]) -> dict[str, Any]:
        """The reply; if the cell ended before it came, it comes with the next run."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REPLY_TIMEOUT
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError
            try:
                return await asyncio.wait_for(asyncio.shield(future), min(left, COLLECT_EVERY))
            except TimeoutError:
                if not self._running() and not future.done():
                    await self._run(None)  # delivers replies kept back for want of a run

    def from_worker(self, kind: str, event: dict[str, Any]) -> None:
        """A ``debug_event`` or ``debug_reply`` event of any run (the relay's ``on_debug``)."""
        content = event.get("content")
        if not isinstance(content, dict):
            self.dropped += 1
            return
        if kind == "debug_event":
            clean, cut = clean_event(content)
            if cut:
                self.dropped += cut
                log.debug("debugger event %.40r: %d unknown parts dropped",
                          content.get("event"), cut)
            if clean is not None:
                self._publish(clean)
            return
        ident = event.get("id")
        entry = self._pending.get(ident) if isinstance(ident, int) else None
        if entry is None or entry[1].done():
            return  # not asked for (or asked and given up): dropped
        entry[1].set_result(self._checked(entry[0], content))

    def _checked(self, dap: dict[str, Any], reply: Any) -> dict[str, Any]:
        """The worker's reply, if it is one to ``dap``; bundles cleaned as outputs are."""
        if not isinstance(reply, dict):
            return failed(dap, "the sandbox gave no answer to this debugger request")
        if reply.get("command") not in (None, dap.get("command")) and reply.get("command") != \
                "evaluate":  # richInspectVariables answers with its evaluate response
            return failed(dap, "the sandbox answered another debugger request")
        body = reply.get("body")
        if dap.get("command") == "richInspectVariables" and isinstance(body, dict):
            data = body.get("data") if isinstance(body.get("data"), dict) else {}
            clean, _ = self._policy().clean_bundle(data)
            metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
            reply = {**reply, "body": {"data": clean,
                                       "metadata": {k: v for k, v in metadata.items()
                                                    if k in clean}}}
        return reply
