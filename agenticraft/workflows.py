"""``from agenticraft.workflows import ResearchTeam``: the specification's import path.

The workflows live in :mod:`agenticraft.agents.workflows`; this module only re-exports them.
"""

from __future__ import annotations

from agenticraft.agents.workflows import (
    Finding,
    ResearchReport,
    ResearchTeam,
    Source,
    Step,
    StepRecord,
    Workflow,
    WorkflowResult,
    WorkflowRun,
    extractive_findings,
)

__all__ = ["Finding", "ResearchReport", "ResearchTeam", "Source", "Step", "StepRecord",
           "Workflow", "WorkflowResult", "WorkflowRun", "extractive_findings"]
