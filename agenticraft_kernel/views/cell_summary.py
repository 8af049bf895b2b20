"""The one-line summary a ``%%secure`` cell prints after it ran (``--quiet`` leaves it out)."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from agenticraft.security.context import SecurityContext
from agenticraft_kernel.views.status import show_value


def summary_bundle(ctx: SecurityContext, asked: Mapping[str, Any], usage: Mapping[str, Any],
                   wall_seconds: float, *, where: str, returned: Sequence[str] = (),
                   unchanged: str = "default limits") -> dict[str, str]:
    """``secure: <where>; <the limits asked for>; used <memory>, <cpu>, <time>``."""
    limits = ctx.resource_limits
    shown = ", ".join(f"{name} {show_value(name, getattr(limits, name))}" for name in asked)
    used = (f"used {float(usage.get('memory_mb', 0.0)):.1f} MB, "
            f"{float(usage.get('cpu_seconds', 0.0)):.2f} s CPU, {wall_seconds:.2f} s")
    parts = [f"secure: {ctx.sandbox_type} sandbox, {where}", shown or unchanged, used]
    if returned:
        parts.append("returned " + ", ".join(returned))
    text = "; ".join(parts)
    return {"text/plain": text,
            "text/html": f"<div class='agenticraft-summary' style='color:#666;font-size:85%'>"
                         f"{html.escape(text)}</div>"}
