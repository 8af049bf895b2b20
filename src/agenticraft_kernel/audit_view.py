"""``%audit_trail [N]``: this kernel's own audit records, shown in the notebook.

The audit log is unreadable from inside the sandbox (it is a protected path), so the parent kernel
answers this line itself: the newest N records carrying this kernel's id, read-only.
"""

from __future__ import annotations

import html
import re
from typing import Any

AUDIT_MAGIC = re.compile(r"^\s*%audit_trail(?:\s+(\d+))?\s*$")
COLUMNS = ("seq", "ts", "type", "what", "cell", "code", "memory_mb", "cpu_s")


def requested(code: str) -> int | None:
    """N if the cell is exactly ``%audit_trail [N]`` (default 20), else None."""
    match = AUDIT_MAGIC.match(code)
    if match is None:
        return None
    return int(match.group(1) or 20)


def kernel_records(log: Any, kernel_id: str, n: int) -> list[dict[str, Any]]:
    if not hasattr(log, "query"):
        return []  # audit logging is disabled
    records = [r for r in log.query() if r.get("kernel_id") == kernel_id]
    return records[-n:] if n else records


def _row(rec: dict[str, Any]) -> tuple[str, ...]:
    what = rec.get("outcome") or rec.get("event") or ""
    if rec.get("type") == "violation":
        what = f"{rec.get('limit')}" + (f": {rec['detail']}" if rec.get("detail") else "")
    elif rec.get("limit"):
        what += f" ({rec['limit']})"
    usage = rec.get("usage") or {}
    return (str(rec.get("seq", "")), str(rec.get("ts", ""))[11:23], str(rec.get("type", "")),
            what[:90], str(rec.get("execution_count", "") or ""),
            str(rec.get("code_sha256", ""))[:12], str(usage.get("memory_mb", "")),
            str(usage.get("cpu_seconds", "")))


def render(records: list[dict[str, Any]], path: Any) -> dict[str, str]:
    """A mime bundle: a plain-text table and an HTML table."""
    rows = [_row(r) for r in records]
    widths = [max([len(c)] + [len(row[i]) for row in rows]) for i, c in enumerate(COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in rows]
    title = f"Audit trail of this kernel ({len(rows)} records, log {path})"
    cells = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>"
                    for row in rows)
    head = "".join(f"<th>{c}</th>" for c in COLUMNS)
    return {"text/plain": title + "\n" + "\n".join(lines),
            "text/html": f"<p>{html.escape(title)}</p><table><tr>{head}</tr>{cells}</table>"}
