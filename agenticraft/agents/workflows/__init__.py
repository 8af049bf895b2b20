"""Workflows run a task as sandboxed, audited steps under the caller's resolved context.

``Workflow.run(task=..., user_context=...)`` requires ``execute_workflow``; the results are
returned only with ``read_results``. ``ResearchTeam`` gathers sources through its tools and
writes a cited report (extractive offline, or written by a model provider).
"""

from __future__ import annotations

from agenticraft.agents.workflows.base import (
           Step,
           StepRecord,
           Workflow,
           WorkflowResult,
           WorkflowRun,
)
from agenticraft.agents.workflows.research import (
           Finding,
           ResearchReport,
           ResearchTeam,
           Source,
           extractive_findings,
)

__all__ = ["Finding", "ResearchReport", "ResearchTeam", "Source", "Step", "StepRecord",
           "Workflow", "WorkflowResult", "WorkflowRun", "extractive_findings"]
