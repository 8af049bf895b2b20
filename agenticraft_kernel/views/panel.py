"""``%secure_panel``: limits, live gauges, the last cells and the audit history.

The panel knows nothing about kernels: its host (``parent.panel_host.PanelHost``, in both
kernels) feeds it (``start_cell``, ``sample``, ``end_cell``) and gives it two read-only sources
(recent cells, an audit query). In the secure kernel the host is the parent process, so user
code in the sandbox cannot reach the widgets; in a stock kernel it is the ``%load_ext`` magics'.

``WidgetPanel`` uses ipywidgets; ``TextPanel`` is the fallback where ipywidgets cannot be
imported: a plain display refreshed through its display id. Every display carries a
``text/plain`` snapshot for frontends without a widget manager.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Mapping
from typing import Any

from agenticraft.security.audit import EVENT_TYPES
from agenticraft.security.context import SecurityContext
from agenticraft.wire.limits import ResourceLimits
from agenticraft_kernel.views.audit_table import AUDIT_COLUMNS, html_table, record_row
from agenticraft_kernel.views.status import degraded, show_value

RecentCells = Callable[[], list[dict[str, Any]]]
AuditQuery = Callable[[str | None, str | None, int], list[dict[str, Any]]]
GAUGES = (("memory", "memory", "MB"), ("cpu", "CPU", "%"), ("elapsed", "time", "s"))
RECENT_SHOWN = 8


def cell_row(rec: Mapping[str, Any]) -> tuple[str, ...]:
    usage = rec.get("usage") or {}
    outcome = str(rec.get("outcome", ""))
    if rec.get("limit"):
        outcome += f" ({rec['limit']})"
    magic = rec.get("magic") or {}
    note = ("%%secure " + str(magic.get("line", ""))).strip() if magic else ""
    if rec.get("served_by") == "kernel":
        note = "answered by the kernel"
    memory, cpu = usage.get("memory_mb"), usage.get("cpu_seconds")
    return (str(rec.get("execution_count", "") or ""), outcome,
            f"{float(rec.get('duration_ms', 0.0)) / 1000:.2f} s",
            "-" if memory is None else f"{float(memory):.1f} MB",
            "-" if cpu is None else f"{float(cpu):.2f} s", note)


CELL_COLUMNS = ("cell", "outcome", "time", "peak memory", "cpu", "note")


def panel_text(ctx: SecurityContext, enforcement: Mapping[str, str],
               recent: list[dict[str, Any]], status: str = "") -> str:
    """The panel as plain text (the fallback of every display of it)."""
    weak = degraded(enforcement)
    lines = [f"AgentiCraft Secure panel: user {ctx.user_id}, {ctx.sandbox_type} sandbox"]
    lines.append("limits: " + ", ".join(f"{name} {show_value(name, value)}" for name, value
                                        in ctx.resource_limits.as_dict().items()))
    lines.append("permissions: " + ", ".join(sorted(ctx.permissions)))
    if weak:
        lines.append("WARNING degraded on this host: " + ", ".join(weak))
    if status:
        lines.append(status)
    for rec in recent[-RECENT_SHOWN:]:
        row = cell_row(rec)
        lines.append(f"  [{row[0]}] {row[1]}  {row[2]}  {row[3]}  cpu {row[4]}  {row[5]}")
    return "\n".join(lines)


class PanelBase:
    """What both panels share: the context, the feeds and the live state."""

    def __init__(self, ctx: SecurityContext, enforcement: Mapping[str, str], *,
                 recent: RecentCells, audit: AuditQuery, title: str = "",
                 note: Callable[[], str] | None = None) -> None:
        self.ctx = ctx
        self.note = note
        self.enforcement = dict(enforcement)
        self.recent = recent
        self.audit = audit
        self.title = title
        self.limits: ResourceLimits = ctx.resource_limits
        self.status = "idle"
        self.running = False
        #: Re-publishes the display (set by the owner; used by the text panel).
        self.update: Callable[[dict[str, Any]], None] | None = None

    def text(self) -> str:
        return panel_text(self.ctx, self.enforcement, self.recent(), self.status)

    def start_cell(self, label: str, limits: ResourceLimits) -> None:
        self.limits = limits
        self.running = True
        self.status = f"running {label}"

    def sample(self, elapsed: float, memory_mb: float | None, cpu_percent: float | None) -> None:
        """A live measurement of the running cell."""

    def end_cell(self) -> None:
        self.running = False
        recent = self.recent()
        last = recent[-1] if recent else None
        self.status = (f"idle; last cell [{cell_row(last)[0]}] {cell_row(last)[1]}"
                       if last else "idle")
        if self.note is not None:
            self.status += f"; {self.note()}"
        self.limits = self.ctx.resource_limits


class WidgetPanel(PanelBase):
    """The ipywidgets panel (see the module docstring)."""

    def __init__(self, ctx: SecurityContext, enforcement: Mapping[str, str], *,
                 recent: RecentCells, audit: AuditQuery, title: str = "",
                 note: Callable[[], str] | None = None) -> None:
        super().__init__(ctx, enforcement, recent=recent, audit=audit, title=title, note=note)
        import ipywidgets as w
        self.w = w
        self.header = w.HTML()
        self.limits_html = w.HTML()
        self.bars: dict[str, Any] = {}
        self.readouts: dict[str, Any] = {}
        rows = []
        for key, name, _unit in GAUGES:  # CSS classes in the constructors: part of comm_open
            bar = w.FloatProgress(value=0.0, min=0.0, max=1.0, bar_style="info",
                                  layout=w.Layout(width="240px"),
                                  _dom_classes=(f"agenticraft-bar-{key}",))
            readout = w.Label(value="-", _dom_classes=(f"agenticraft-readout-{key}",))
            label = w.Label(value=name, layout=w.Layout(width="60px"))
            rows.append(w.HBox([label, bar, readout], _dom_classes=(f"agenticraft-gauge-{key}",)))
            self.bars[key], self.readouts[key] = bar, readout
        self.status_html = w.HTML(_dom_classes=("agenticraft-status-line",))
        self.cells_html = w.HTML(_dom_classes=("agenticraft-cells",))
        self.type_filter = w.Dropdown(options=["all", *EVENT_TYPES], value="all",
                                      description="type", layout=w.Layout(width="200px"),
                                      _dom_classes=("agenticraft-audit-type",))
        self.user_filter = w.Text(value="", placeholder="any user", description="user",
                                  layout=w.Layout(width="200px"))
        self.count = w.BoundedIntText(value=15, min=1, max=500, description="last",
                                      layout=w.Layout(width="140px"))
        self.refresh = w.Button(description="Refresh", layout=w.Layout(width="90px"))
        self.audit_html = w.HTML(layout=w.Layout(max_height="220px", overflow="auto"),
                                 _dom_classes=("agenticraft-audit-history",))
        for control in (self.type_filter, self.user_filter, self.count):
            control.observe(lambda _change: self.refresh_audit(), names="value")
        self.refresh.on_click(lambda _button: self.refresh_audit())
        gauges = w.VBox(rows)
        audit_box = w.VBox([w.HBox([self.type_filter, self.user_filter, self.count,
                                    self.refresh]), self.audit_html])
        self.box = w.VBox([self.header, self.limits_html, gauges, self.status_html,
                           w.HTML("<b>Last cells</b>"), self.cells_html,
                           w.HTML("<b>Audit history</b>"), audit_box],
                          layout=w.Layout(border="1px solid #ccc", padding="6px",
                                          width="100%"), _dom_classes=("agenticraft-panel",))
        self._draw_static()
        self._show_limits(ctx.resource_limits)
        self.end_cell()

    # -- drawing ---------------------------------------------------------------------------------
    def _draw_static(self) -> None:
        weak = degraded(self.enforcement)
        badge = ""
        if weak:
            tip = html.escape("; ".join(f"{k}: {v}" for k, v in weak.items()), quote=True)
            badge = (f" <span class='agenticraft-degraded' title='{tip}' style='background:"
                     f"#f0ad4e;color:#000;border-radius:4px;padding:1px 6px'>&#9888; "
                     f"{len(weak)} limit(s) degraded on this host</span>")
        self.header.value = (f"<b>AgentiCraft Secure</b> &middot; user "
                             f"{html.escape(self.ctx.user_id)} &middot; "
                             f"{html.escape(str(self.ctx.sandbox_type))} sandbox"
                             f"{(' &middot; ' + html.escape(self.title)) if self.title else ''}"
                             f"{badge}")
        rows = [(name, show_value(name, value), str(self.enforcement.get(name, "")))
                for name, value in self.ctx.resource_limits.as_dict().items()]
        perms = ", ".join(sorted(self.ctx.permissions))
        self.limits_html.value = (
            "<details><summary>limits and permissions: "
            + html.escape(", ".join(f"{r[0]} {r[1]}" for r in rows[:3])) + ", ...</summary>"
            + html_table(rows, ("limit", "value", "enforced here by"), "agenticraft-limits",
                         compact=True)
            + f"<p>permissions: {html.escape(perms)}</p></details>")

    def _show_limits(self, limits: ResourceLimits) -> None:
        maxima = {"memory": float(limits.memory_mb), "cpu": float(limits.cpu_percent),
                  "elapsed": float(limits.timeout_seconds)}
        for key, bar in self.bars.items():
            with bar.hold_sync():
                bar.max = maxima[key]
                bar.value = min(bar.value, maxima[key])

    def _gauge(self, key: str, value: float | None, unit: str, limit: float) -> None:
        bar, readout = self.bars[key], self.readouts[key]
        if value is None:  # nothing measured (yet): an empty bar
            bar.value = 0.0
            readout.value = f"- / {limit:g} {unit}"
            return
        share = value / limit if limit else 0.0
        with bar.hold_sync():
            bar.value = min(value, limit)
            bar.bar_style = "danger" if share >= 0.9 else "warning" if share >= 0.7 else "info"
        readout.value = f"{value:.1f} / {limit:g} {unit}"

    # -- feeds -----------------------------------------------------------------------------------
    def start_cell(self, label: str, limits: ResourceLimits) -> None:
        super().start_cell(label, limits)
        self._show_limits(limits)
        self.status_html.value = f"<span style='color:#1a7f37'>&#9679;</span> " \
                                 f"{html.escape(self.status)}"
        self.sample(0.0, None, None)

    def sample(self, elapsed: float, memory_mb: float | None, cpu_percent: float | None) -> None:
        limits = self.limits
        self._gauge("memory", memory_mb, "MB", float(limits.memory_mb))
        self._gauge("cpu", cpu_percent, "%", float(limits.cpu_percent))
        self._gauge("elapsed", elapsed, "s", float(limits.timeout_seconds))

    def end_cell(self) -> None:
        super().end_cell()
        recent = self.recent()
        # the last measured cell's usage stays on the gauges, against that cell's own limits
        last = next((rec for rec in reversed(recent) if rec.get("usage")), None)
        if last is None:
            self._show_limits(self.ctx.resource_limits)
        else:
            try:
                limits = ResourceLimits.from_value(last.get("limits") or {},
                                                   base=self.ctx.resource_limits)
            except ValueError:
                limits = self.ctx.resource_limits
            self._show_limits(limits)
            usage = last.get("usage") or {}
            wall = float(last.get("duration_ms", 0.0)) / 1000
            cpu = usage.get("cpu_seconds")
            memory = usage.get("memory_mb")
            self._gauge("memory", None if memory is None else float(memory), "MB",
                        float(limits.memory_mb))
            self._gauge("cpu", None if cpu is None else (100.0 * float(cpu) / wall
                                                          if wall > 0 else 0.0),
                        "%", float(limits.cpu_percent))
            self._gauge("elapsed", wall, "s", float(limits.timeout_seconds))
        self.status_html.value = html.escape(self.status)
        rows = [cell_row(rec) for rec in recent[-RECENT_SHOWN:]]
        self.cells_html.value = (html_table(rows, CELL_COLUMNS, "agenticraft-recent",
                                            compact=True) if rows
                                 else "<i>no cells yet</i>")
        self.refresh_audit()

    def refresh_audit(self) -> None:
        kind = None if self.type_filter.value == "all" else str(self.type_filter.value)
        user = self.user_filter.value.strip() or None
        try:
            records = self.audit(kind, user, int(self.count.value))
        except Exception as exc:  # a damaged log must not break the panel
            self.audit_html.value = f"<i>audit log unreadable: {html.escape(str(exc))}</i>"
            return
        rows = [record_row(rec, AUDIT_COLUMNS) for rec in reversed(records)]
        self.audit_html.value = (html_table(rows, AUDIT_COLUMNS, "agenticraft-audit",
                                            compact=True) if rows
                                 else "<i>no matching records</i>")

    def bundle(self) -> dict[str, Any]:
        """The display: the widget view, and the text snapshot for frontends without widgets."""
        data = dict(self.box._repr_mimebundle_() or {})
        data["text/plain"] = self.text()
        return data


class TextPanel(PanelBase):
    """Fallback without ipywidgets: a text/HTML display refreshed through its display id."""

    MIN_INTERVAL = 1.0

    def __init__(self, ctx: SecurityContext, enforcement: Mapping[str, str], *,
                 recent: RecentCells, audit: AuditQuery, title: str = "",
                 note: Callable[[], str] | None = None) -> None:
        super().__init__(ctx, enforcement, recent=recent, audit=audit, title=title, note=note)
        self.live = ""
        self._last = 0.0

    def text(self) -> str:
        return super().text() + (f"\n{self.live}" if self.live else "")

    def bundle(self) -> dict[str, Any]:
        return {"text/plain": self.text(),
                "text/html": f"<pre class='agenticraft-panel-text'>{html.escape(self.text())}"
                             "</pre>"}

    def _push(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.update is not None and (force or now - self._last >= self.MIN_INTERVAL):
            self._last = now
            self.update(self.bundle())

    def start_cell(self, label: str, limits: ResourceLimits) -> None:
        super().start_cell(label, limits)
        self.live = ""
        self._push(force=True)

    def sample(self, elapsed: float, memory_mb: float | None, cpu_percent: float | None) -> None:
        limits = self.limits
        memory = "-" if memory_mb is None else f"{memory_mb:.1f}"
        cpu = "-" if cpu_percent is None else f"{cpu_percent:.0f}"
        self.live = (f"live: memory {memory} / {limits.memory_mb} MB, cpu {cpu} / "
                     f"{limits.cpu_percent:g} %, time {elapsed:.1f} / "
                     f"{limits.timeout_seconds:g} s")
        self._push()

    def end_cell(self) -> None:
        super().end_cell()
        self.live = ""
        self._push(force=True)


def make_panel(ctx: SecurityContext, enforcement: Mapping[str, str], *, recent: RecentCells,
               audit: AuditQuery, title: str = "",
               note: Callable[[], str] | None = None) -> PanelBase:
    """A widget panel when ipywidgets is importable, else the text panel. ``note``: a line the
    idle status adds, asked after every cell (the kernel: whether ``%secure_undo`` can go back)."""
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return TextPanel(ctx, enforcement, recent=recent, audit=audit, title=title, note=note)
    return WidgetPanel(ctx, enforcement, recent=recent, audit=audit, title=title, note=note)
