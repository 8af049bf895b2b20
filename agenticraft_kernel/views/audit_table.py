"""``%audit_trail [N]`` and ``%secure_audit``: audit records shown in the notebook.

The audit log is unreadable from inside the sandbox (it is a protected path), so the parent kernel
answers these itself, read-only: ``%audit_trail`` the newest N records carrying this kernel's id,
``%secure_audit`` the newest records of the log with filters (and ``--verify`` of the chain).
"""

from __future__ import annotations

import html
import re
from typing import Any

AUDIT_MAGIC = re.compile(r"^\s*%audit_trail(?:\s+(\d+))?\s*$")
COLUMNS = ("seq", "ts", "type", "what", "cell", "code", "memory_mb", "cpu_s")
AUDIT_COLUMNS = ("seq", "ts", "type", "user", *COLUMNS[3:])


def requested(code: str) -> int | None:
    """N if the cell is exactly ``%audit_trail [N]`` (default 20), else None."""
    match = AUDIT_MAGIC.match(code)
    if match is None:
        return None
    return int(match.group(1) or 20)


def query(log: Any, kind: str | None, user: str | None, n: int) -> list[dict[str, Any]]:
    """The newest ``n`` records of ``kind`` for ``user`` (the panel's audit history)."""
    if not hasattr(log, "query"):
        return []  # audit logging is disabled
    return list(log.query(user_id=user, event_type=kind, limit=n))


def kernel_records(log: Any, kernel_id: str, n: int) -> list[dict[str, Any]]:
    if not hasattr(log, "query"):
        return []  # audit logging is disabled
    records = [r for r in log.query() if r.get("kernel_id") == kernel_id]
    return records[-n:] if n else records


def record_row(rec: dict[str, Any], columns: tuple[str, ...] = COLUMNS) -> tuple[str, ...]:
    what = rec.get("outcome") or rec.get("event") or ""
    if rec.get("type") == "violation":
        what = f"{rec.get('limit')}" + (f": {rec['detail']}" if rec.get("detail") else "")
    elif rec.get("limit"):
        what += f" ({rec['limit']})"
    if rec.get("type") == "authorization":
        what = ("allowed" if rec.get("allowed") else "DENIED") + f" {rec.get('permission', '')}"
        if not rec.get("allowed") and rec.get("reason"):
            what += f": {rec['reason']}"
    if rec.get("magic"):
        what += " %%secure " + str((rec.get("magic") or {}).get("line", ""))
    usage = rec.get("usage") or {}
    values = {"seq": str(rec.get("seq", "")), "ts": str(rec.get("ts", ""))[11:23],
              "type": str(rec.get("type", "")), "user": str(rec.get("user_id", "")),
              "what": what[:90], "cell": str(rec.get("execution_count", "") or ""),
              "code": str(rec.get("code_sha256", ""))[:12],
              "memory_mb": str(usage.get("memory_mb", "")),
              "cpu_s": str(usage.get("cpu_seconds", ""))}
    return tuple(values[c] for c in columns)


def text_table(rows: list[tuple[str, ...]], columns: tuple[str, ...]) -> list[str]:
    widths = [max([len(c)] + [len(row[i]) for row in rows]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in rows]
    return lines


CELL_STYLE = "padding:1px 8px;text-align:left;border-bottom:1px solid #e6e6e6"


def html_table(rows: list[tuple[str, ...]], columns: tuple[str, ...],
               css_class: str = "agenticraft-audit", compact: bool = False) -> str:
    """An HTML table; ``compact`` adds inline styles (inside widgets no notebook CSS applies)."""
    cell = f' style="{CELL_STYLE}"' if compact else ""
    table = ' style="border-collapse:collapse;font-size:90%"' if compact else ""
    cells = "".join("<tr>" + "".join(f"<td{cell}>{html.escape(v)}</td>" for v in row)
                    + "</tr>" for row in rows)
    head = "".join(f"<th{cell}>{c}</th>" for c in columns)
    return f'<table class="{css_class}"{table}><tr>{head}</tr>{cells}</table>'


def render(records: list[dict[str, Any]], path: Any, title: str | None = None,
           columns: tuple[str, ...] = COLUMNS, footer: str = "") -> dict[str, str]:
    """A mime bundle: a plain-text table and an HTML table."""
    rows = [record_row(r, columns) for r in records]
    title = title or f"Audit trail of this kernel ({len(rows)} records, log {path})"
    text = title + "\n" + "\n".join(text_table(rows, columns))
    markup = f"<p>{html.escape(title)}</p>{html_table(rows, columns)}"
    if footer:
        text += "\n" + footer
        markup += f"<p>{html.escape(footer)}</p>"
    return {"text/plain": text, "text/html": markup}


def secure_audit(log: Any, n: int, user: str | None = None, event_type: str | None = None,
                 verify: bool = False) -> dict[str, str]:
    """``%secure_audit``: the newest ``n`` records matching the filters, and the chain check."""
    if not hasattr(log, "query"):
        text = "Audit logging is disabled (enable_audit_logging is off)."
        return {"text/plain": text, "text/html": f"<p>{html.escape(text)}</p>"}
    records = log.query(user_id=user, event_type=event_type, limit=n)
    filters = ", ".join(f"{k}={v}" for k, v in (("user", user), ("type", event_type)) if v)
    title = (f"Audit log {log.path}: newest {len(records)} records"
             + (f" ({filters})" if filters else ""))
    footer = f"verify: {log.verify()}" if verify else ""
    return render(records, log.path, title=title, columns=AUDIT_COLUMNS, footer=footer)
