"""The panel without a kernel: the degraded-host badge, live gauges against the cell's limits,
and the text fallback (with and without ipywidgets)."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from agenticraft.security.context import SecurityContext
from agenticraft.wire.limits import ResourceLimits
from agenticraft_kernel.views.panel import TextPanel, WidgetPanel, make_panel

ENFORCED = {"memory_mb": "RLIMIT_AS (baseline + limit) + supervisor RSS watchdog",
            "timeout_seconds": "supervisor wall clock"}
DEGRADED = {**ENFORCED, "max_processes": "DEGRADED: supervisor watchdog only (uid 0 is exempt)",
            "filesystem_access": "NOT ENFORCED: Landlock unavailable"}


def context() -> SecurityContext:
    return SecurityContext("alice", ["execute"], {"memory_mb": 256, "timeout_seconds": 10},
                           sandbox_type="process", _resolved=True)


def feeds(cells: list[dict[str, Any]]) -> dict[str, Any]:
    return {"recent": lambda: list(cells),
            "audit": lambda kind, user, n: [{"seq": 7, "type": kind or "execution",
                                             "user_id": user or "alice", "outcome": "ok"}]}


def test_badge_only_when_a_limit_is_degraded() -> None:
    fine = WidgetPanel(context(), ENFORCED, **feeds([]))
    assert "agenticraft-degraded" not in fine.header.value
    weak = WidgetPanel(context(), DEGRADED, **feeds([]))
    assert "2 limit(s) degraded on this host" in weak.header.value
    assert "max_processes: DEGRADED" in weak.header.value  # the reason, as a tooltip
    assert "WARNING degraded on this host: max_processes, filesystem_access" in weak.text()


def test_gauges_follow_the_running_cell_then_show_its_usage() -> None:
    cells: list[dict[str, Any]] = []
    panel = WidgetPanel(context(), ENFORCED, **feeds(cells))
    panel.start_cell("cell [3]", ResourceLimits(memory_mb=64, timeout_seconds=2))
    panel.sample(1.5, 60.0, 40.0)
    assert panel.readouts["elapsed"].value == "1.5 / 2 s"
    assert panel.readouts["memory"].value == "60.0 / 64 MB"
    assert panel.bars["memory"].bar_style == "danger"  # 94 % of the cell's limit
    assert "running cell [3]" in panel.status_html.value
    cells.append({"execution_count": 3, "outcome": "limit_exceeded", "limit": "memory_mb",
                  "duration_ms": 1600.0, "usage": {"memory_mb": 65.2, "cpu_seconds": 0.4},
                  "limits": {"memory_mb": 64, "timeout_seconds": 2, "cpu_percent": 50}})
    panel.end_cell()
    assert panel.readouts["memory"].value == "65.2 / 64 MB"
    assert "limit_exceeded (memory_mb)" in panel.cells_html.value
    assert "idle; last cell [3] limit_exceeded (memory_mb)" in panel.status_html.value
    panel.type_filter.value = "violation"  # a filter change re-reads the audit log
    assert ">violation</td>" in panel.audit_html.value


def test_every_display_has_a_text_fallback() -> None:
    bundle = WidgetPanel(context(), ENFORCED, **feeds([])).bundle()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["text/plain"].startswith("AgentiCraft Secure panel: user alice")


def test_text_panel_without_ipywidgets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import fails
    cells: list[dict[str, Any]] = []
    panel = make_panel(context(), DEGRADED, **feeds(cells))
    assert isinstance(panel, TextPanel)
    pushed: list[dict[str, Any]] = []
    panel.update = pushed.append
    panel.start_cell("cell [1]", ResourceLimits(timeout_seconds=5))
    panel.sample(2.0, 30.0, None)
    assert set(pushed[-1]) == {"text/plain", "text/html"}
    assert "live: memory 30.0 / 512 MB, cpu - / 50 %, time 2.0 / 5 s" in panel.text()
    cells.append({"execution_count": 1, "outcome": "ok", "duration_ms": 2100.0,
                  "usage": {"memory_mb": 31.0, "cpu_seconds": 0.1}})
    panel.end_cell()
    assert "[1] ok  2.10 s  31.0 MB" in pushed[-1]["text/plain"]
    assert "live:" not in pushed[-1]["text/plain"]  # idle again


def test_the_idle_status_carries_the_kernels_note(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel's note (whether %secure_undo can go back) is asked again after every cell."""
    note = ["%secure_undo: not available: no run has finished in this session yet"]
    cells: list[dict[str, Any]] = []
    widget = WidgetPanel(context(), ENFORCED, **feeds(cells), note=lambda: note[0])
    assert "idle; %secure_undo: not available: no run has finished" in widget.status_html.value
    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    text = make_panel(context(), ENFORCED, **feeds(cells), note=lambda: note[0])
    cells.append({"execution_count": 1, "outcome": "ok", "duration_ms": 5.0})
    note[0] = "%secure_undo: available (restores the variables from before the last cell)"
    for panel in (widget, text):
        panel.end_cell()
        assert "idle; last cell [1] ok; %secure_undo: available" in panel.text()
