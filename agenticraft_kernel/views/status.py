"""``%secure_status``: the effective context and what this host enforces, as one table.

Shared by the secure kernel's parent and the stock-kernel magics: both pass a resolved
``SecurityContext`` and the per-limit enforcement report (``ExecutionResult.enforced`` wording,
from ``confine.probe``), and get back a mime bundle with a plain-text fallback.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from agenticraft.security.context import SecurityContext
from agenticraft_kernel.views.audit_table import html_table, text_table

UNITS = {"timeout_seconds": "s", "memory_mb": "MB", "cpu_percent": "%", "max_file_size_mb": "MB",
         "max_output_bytes": "bytes", "max_network_bytes": "bytes"}
WEAK = ("DEGRADED", "NOT ENFORCED", "NOT AVAILABLE")


def degraded(enforcement: Mapping[str, str]) -> dict[str, str]:
    """The limits this host enforces only partly or not at all."""
    return {name: how for name, how in enforcement.items() if str(how).startswith(WEAK)}


def show_value(name: str, value: Any) -> str:
    if name == "network_access" and isinstance(value, tuple):
        return "only " + ", ".join(value)  # the effective allow-list
    if value is None:
        return "no limit"
    if isinstance(value, bool):
        return "allowed" if value else "off"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    unit = UNITS.get(name)
    return f"{value} {unit}" if unit else str(value)


def render_status(ctx: SecurityContext, enforcement: Mapping[str, str], *, where: str,
                  notes: tuple[str, ...] = ()) -> dict[str, str]:
    """A mime bundle (``text/plain`` and ``text/html``) describing ``ctx`` on this host."""
    limits = ctx.resource_limits.as_dict()
    rows = [(name, show_value(name, value), str(enforcement.get(name, "")))
            for name, value in limits.items()]
    columns = ("limit", "value", "enforced here by")
    facts = [("user", ctx.user_id), ("sandbox", str(ctx.sandbox_type)),
             ("permissions", ", ".join(sorted(ctx.permissions))),
             ("working directory", str(ctx.working_dir or "")), ("where", where)]
    weak = degraded(enforcement)
    lines = ["AgentiCraft Secure: effective security context"]
    lines += [f"  {k + ':':<19}{v}" for k, v in facts]
    lines += ["", *text_table(rows, columns)]
    badge = ""
    if weak:
        warning = (f"Warning: {len(weak)} limit(s) degraded or not enforced on this host: "
                   + ", ".join(weak))
        lines += ["", warning]
        badge = (f'<p class="agenticraft-degraded" style="color:#b35900">&#9888; '
                 f"{html.escape(warning)}</p>")
    lines += list(notes)
    fact_rows = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
                        f"<td style='text-align:left'>{html.escape(v)}</td></tr>"
                        for k, v in facts)
    limits_table = html_table(rows, columns, "agenticraft-limits")
    notes_html = "".join(f"<p>{html.escape(n)}</p>" for n in notes)
    markup = (f"<div class='agenticraft-status'><p><b>AgentiCraft Secure</b>: effective "
              f"security context</p><table>{fact_rows}</table>{limits_table}{badge}"
              f"{notes_html}</div>")
    return {"text/plain": "\n".join(lines), "text/html": markup}
