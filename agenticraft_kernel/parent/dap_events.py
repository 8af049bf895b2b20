"""Parent side: which debugger events may reach the frontend, and with which fields.

debugpy runs inside the sandbox, so its events are the attacker's data. Only the standard DAP
events a debugger frontend shows go to IOPub (JupyterLab's debugger reads ``initialized``,
``stopped``, ``continued`` and ``terminated``; the others are what DAP clients display), each
with the body fields the DAP specification gives it, of the type it gives them. Anything else is
dropped and counted: debugpy's own events (``debugpySockets`` names the adapter's ports), unknown
events, unknown fields, fields of the wrong type, and the fields the specification leaves
untyped (``output.data``, ``terminated.restart``, ``source.adapterData``: nothing to check them
against, and no frontend needs them).
"""

from __future__ import annotations

from typing import Any

#: A field's shape: a Python type (``int`` never accepts ``bool``), a tuple of them, a nested
#: object's own fields, or ``[shape]`` for a list of that shape.
Shape = type | tuple[type, ...] | dict[str, Any] | list[Any]

SOURCE: dict[str, Shape] = {"name": str, "path": str, "sourceReference": int,
                            "presentationHint": str, "origin": str}
BREAKPOINT: dict[str, Shape] = {
    "id": int, "verified": bool, "message": str, "source": SOURCE, "line": int, "column": int,
    "endLine": int, "endColumn": int, "instructionReference": str, "offset": int, "reason": str}
MODULE: dict[str, Shape] = {
    "id": (int, str), "name": str, "path": str, "isOptimized": bool, "isUserCode": bool,
    "version": str, "symbolStatus": str, "symbolFilePath": str, "dateTimeStamp": str,
    "addressRange": str}

#: The events relayed, and the fields of each one's body (DAP specification, "Events").
EVENTS: dict[str, dict[str, Shape]] = {
    "initialized": {},
    "stopped": {"reason": str, "description": str, "threadId": int, "preserveFocusHint": bool,
                "text": str, "allThreadsStopped": bool, "hitBreakpointIds": [int]},
    "continued": {"threadId": int, "allThreadsContinued": bool},
    "exited": {"exitCode": int},
    "terminated": {},
    "thread": {"reason": str, "threadId": int},
    "output": {"category": str, "output": str, "group": str, "variablesReference": int,
               "source": SOURCE, "line": int, "column": int, "locationReference": int},
    "breakpoint": {"reason": str, "breakpoint": BREAKPOINT},
    "module": {"reason": str, "module": MODULE},
    "loadedSource": {"reason": str, "source": SOURCE},
    "process": {"name": str, "systemProcessId": int, "isLocalProcess": bool,
                "startMethod": str, "pointerSize": int},
}

_DROP = object()


def _clean(value: Any, shape: Shape) -> tuple[Any, int]:
    """``value`` cut to ``shape`` (``_DROP`` if it does not fit) and how many parts were cut."""
    if isinstance(shape, dict):
        return _fields(value, shape) if isinstance(value, dict) else (_DROP, 1)
    if isinstance(shape, list):
        if not isinstance(value, list):
            return _DROP, 1
        items = [_clean(item, shape[0]) for item in value]
        kept = [item for item, _ in items if item is not _DROP]
        return kept, sum(cut for _, cut in items)
    types = shape if isinstance(shape, tuple) else (shape,)
    if isinstance(value, bool) and bool not in types:  # bool is an int to isinstance
        return _DROP, 1
    return (value, 0) if isinstance(value, types) else (_DROP, 1)


def _fields(obj: dict[str, Any], fields: dict[str, Shape]) -> tuple[dict[str, Any], int]:
    out: dict[str, Any] = {}
    cut = 0
    for key, value in obj.items():
        shape = fields.get(key) if isinstance(key, str) else None
        if shape is None:
            cut += 1
            continue
        kept, dropped = _clean(value, shape)
        cut += dropped
        if kept is not _DROP:
            out[key] = kept
    return out, cut


def clean_event(content: Any) -> tuple[dict[str, Any] | None, int]:
    """(the DAP event to publish or None, how many events or fields were dropped)."""
    if not isinstance(content, dict) or content.get("type") != "event":
        return None, 1
    name = content.get("event")
    fields = EVENTS.get(name) if isinstance(name, str) else None
    if fields is None:
        return None, 1
    cut = sum(1 for key in content if key not in ("seq", "type", "event", "body"))
    event: dict[str, Any] = {"type": "event", "event": name}
    seq = content.get("seq")
    if isinstance(seq, int) and not isinstance(seq, bool):
        event["seq"] = seq
    elif "seq" in content:
        cut += 1
    if "body" in content:
        body = content["body"]
        if isinstance(body, dict):
            event["body"], dropped = _fields(body, fields)
            cut += dropped
        else:
            cut += 1
    return event, cut
