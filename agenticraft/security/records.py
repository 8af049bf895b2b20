"""Typed builders of audit records: the one place that knows which fields each event carries.

Every ``AuditLog.record`` call in the host takes its event from a builder here, so the shape of a
record is defined once. ``REQUIRED_FIELDS`` is the schema ``AuditLog.record`` validates against;
each builder takes exactly its event type's required fields as its leading parameters (a test
holds the two together). Optional fields are keyword arguments and are written as given.
Records are written by host code only (the manager, agents, the kernel's parent), never from
inside a sandbox.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from agenticraft.wire.codec import to_safe
from agenticraft.wire.limits import Usage

Record = dict[str, Any]

EVENT_TYPES = ("authentication", "authorization", "execution", "violation", "policy", "session",
               "tool", "workflow", "network")

#: Required fields per event type (besides ``type``).
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "authentication": ("user_id", "method", "success"),
    "authorization": ("user_id", "permission", "allowed"),
    "execution": ("user_id", "sandbox_type", "code_sha256", "outcome"),
    "violation": ("user_id", "limit"),
    "policy": ("user_id",),
    "session": ("user_id",),
    "tool": ("user_id",),
    "workflow": ("user_id",),
    "network": ("user_id", "destination", "allowed"),
}


def code_digest(code: str) -> str:
    """The ``code_sha256`` of a record: which code ran, without storing the code."""
    return hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest()


def usage_fields(usage: Usage | Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``usage`` field of an execution record."""
    return usage.as_dict() if isinstance(usage, Usage) else dict(usage or {})


# -- identity and permissions -------------------------------------------------------------------

def authentication(user_id: str, method: str, success: bool, **fields: Any) -> Record:
    """An identity check (``reason`` says why it failed)."""
    return {"type": "authentication", "user_id": user_id, "method": method, "success": success,
            **fields}


def authorization(user_id: str, permission: str, allowed: bool, *, action: str,
                  **fields: Any) -> Record:
    """A permission decision for ``action``."""
    return {"type": "authorization", "user_id": user_id, "permission": permission,
            "allowed": allowed, "action": action, **fields}


def denial(user_id: str, permission: str, *, action: str, reason: str, **fields: Any) -> Record:
    """A refused permission: an ``authorization`` record with ``allowed`` false and why."""
    return authorization(user_id, permission, False, action=action, reason=reason, **fields)


# -- runs ---------------------------------------------------------------------------------------

def execution(user_id: str, sandbox_type: str, code_sha256: str, outcome: str,
              **fields: Any) -> Record:
    """One run of code (``ok``, ``error``, ``limit_exceeded``, ``denied``, ``sandbox_error``...)."""
    return {"type": "execution", "user_id": user_id, "sandbox_type": sandbox_type,
            "code_sha256": code_sha256, "outcome": outcome, **fields}


def sandbox_execution(user_id: str, sandbox_type: str, code_sha256: str, outcome: str, *,
                      limits: Mapping[str, Any], duration_ms: float, **fields: Any) -> Record:
    """A run through ``SandboxManager.audited`` (the agent API): authorized for ``execute``."""
    return execution(user_id, sandbox_type, code_sha256, outcome, permission="execute",
                     authorized=True, limits=dict(limits), duration_ms=duration_ms, **fields)


def kernel_cell(user_id: str, sandbox_type: str, code_sha256: str, outcome: str, *,
                kernel_id: str, execution_count: int | None, cell_id: str | None,
                limits: Mapping[str, Any], usage: Usage | Mapping[str, Any] | None,
                duration_ms: float, **fields: Any) -> Record:
    """One notebook cell, written by the kernel's parent (served by the worker or the kernel)."""
    return execution(user_id, sandbox_type, code_sha256, outcome, kernel_id=kernel_id,
                     execution_count=execution_count, cell_id=cell_id, limits=dict(limits),
                     usage=usage_fields(usage), duration_ms=duration_ms, **fields)


def violation(user_id: str, limit: str, **fields: Any) -> Record:
    """A limit or policy that stopped code (``code_policy`` for the code policy)."""
    return {"type": "violation", "user_id": user_id, "limit": limit, **fields}


def limit_violation(user_id: str, limit: str, value: Any, allowed: Any, **fields: Any) -> Record:
    """A resource limit that was reached: the value reached and the value allowed."""
    return violation(user_id, limit, value=to_safe(value), allowed=to_safe(allowed), **fields)


def session(user_id: str, event: str, **fields: Any) -> Record:
    """A sandbox session or kernel started, refused or shut down."""
    return {"type": "session", "user_id": user_id, "event": event, **fields}


def session_undo(user_id: str, outcome: str, **fields: Any) -> Record:
    """A session asked to go back to its state from before its last run: ``restored``, or
    ``refused`` with the ``reason`` (nothing kept, undone already, lost with the session)."""
    return session(user_id, "undo", outcome=outcome, **fields)


# -- agents -------------------------------------------------------------------------------------

def tool_call(user_id: str, name: str, outcome: str, **fields: Any) -> Record:
    """One call of a registered tool (``unknown`` when no such tool is registered)."""
    return {"type": "tool", "user_id": user_id, "name": name, "outcome": outcome, **fields}


def workflow_started(user_id: str, workflow: str, *, task_chars: int) -> Record:
    return {"type": "workflow", "user_id": user_id, "name": workflow, "event": "started",
            "task_chars": task_chars}


def workflow_step(user_id: str, workflow: str, step: str, kind: str, outcome: str,
                  **fields: Any) -> Record:
    """One step of a workflow run (a tool, code, or the workflow's own work such as a model)."""
    return {"type": "workflow", "user_id": user_id, "name": workflow, "event": "step",
            "step": step, "kind": kind, "outcome": outcome, **fields}


def workflow_finished(user_id: str, workflow: str, outcome: str, *, results_returned: bool,
                      **fields: Any) -> Record:
    return {"type": "workflow", "user_id": user_id, "name": workflow, "event": "finished",
            "outcome": outcome, "results_returned": results_returned, **fields}


# -- egress -------------------------------------------------------------------------------------

def network_connection(user_id: str, destination: str, allowed: bool, *, protocol: str,
                       **fields: Any) -> Record:
    """One connection a sandbox asked the egress proxy for: allowed (written when it closes,
    with ``address``, ``bytes_sent``/``bytes_received``) or denied (with ``reason``)."""
    return {"type": "network", "user_id": user_id, "destination": destination,
            "allowed": allowed, "protocol": protocol, **fields}
