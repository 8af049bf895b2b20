"""``python -m agenticraft_kernel doctor``: what this host enforces, limit by limit."""

from __future__ import annotations

import json

from agenticraft.sandbox.host_report import format_report, host_report


def run_doctor(as_json: bool = False) -> int:
    report = host_report()
    print(json.dumps(report, indent=2) if as_json else format_report(report))
    return 0
