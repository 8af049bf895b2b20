"""The typed audit-record builders agree with the schema ``AuditLog.record`` validates."""

from __future__ import annotations

import inspect
from pathlib import Path

from agenticraft.security import records
from agenticraft.security.audit import AuditLog
from agenticraft.wire.limits import Usage

BUILDERS = [fn for name, fn in inspect.getmembers(records, inspect.isfunction)
            if fn.__module__ == records.__name__ and not name.startswith("_")
            and name not in ("code_digest", "usage_fields")]


def _sample_arguments(fn) -> dict[str, object]:
    """A value for every parameter without a default (keyword-only ones included)."""
    samples = {"success": True, "allowed": True, "task_chars": 3, "results_returned": True,
               "execution_count": 1, "cell_id": None, "limits": {}, "usage": None,
               "duration_ms": 1.0, "value": 2, "code_sha256": "0" * 64}
    return {name: samples.get(name, name) for name, p in inspect.signature(fn).parameters.items()
            if p.default is p.empty and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def test_every_builder_makes_a_record_the_log_accepts(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    assert BUILDERS
    for fn in BUILDERS:
        record = fn(**_sample_arguments(fn))
        assert record["type"] in records.EVENT_TYPES, fn.__name__
        missing = [f for f in records.REQUIRED_FIELDS[record["type"]] if f not in record]
        assert not missing, f"{fn.__name__} leaves out {missing}"
        log.record(record)
    assert log.verify().ok


def test_builders_keep_the_record_shapes() -> None:
    assert records.denial("ann", "execute", action="run", reason="no") == {
        "type": "authorization", "user_id": "ann", "permission": "execute", "allowed": False,
        "action": "run", "reason": "no"}
    assert records.limit_violation("ann", "memory_mb", 600, object(), detail="x")["allowed"] \
        .startswith("<object")
    cell = records.kernel_cell("ann", "process", "d", "ok", kernel_id="k", execution_count=3,
                               cell_id=None, limits={"memory_mb": 1}, duration_ms=1.0,
                               usage=Usage(1.5, 0.25, 7))
    assert cell["usage"] == {"memory_mb": 1.5, "cpu_seconds": 0.25, "output_bytes": 7}
    assert set(records.sandbox_execution("ann", "process", "d", "ok", limits={},
                                         duration_ms=1.0)) == {
        "type", "user_id", "sandbox_type", "code_sha256", "outcome", "permission", "authorized",
        "limits", "duration_ms"}
