"""Workflows: execute_workflow to run, read_results to see the results; ResearchTeam offline,
with web search, and with a model provider."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from agenticraft.agents.tools import WebSearchBackend
from agenticraft.agents.tools.runtime import close_manager
from agenticraft.sandbox import SandboxManager
from agenticraft.security import ResourceLimits
from agenticraft.security.policy import Policy
from agenticraft.wire.errors import ConfigurationError, PermissionDenied
from agenticraft.workflows import (
    ResearchReport,
    ResearchTeam,
    Step,
    Workflow,
    WorkflowResult,
    extractive_findings,
)

from helpers import audit_records, make_manager
from http_helpers import search_handler, serve

pytestmark = pytest.mark.usefixtures("isolated_agent_state")


POLICY = Policy.from_dict({"grants": {
    "default": ["execute", "execute_workflow", "read_results"],
    "users": {"runner": ["execute_workflow"], "coder": ["execute", "read_results"]}}})

DOCS = [
    "Solar power\nSolar power converts sunlight into electricity with photovoltaic panels. "
    "Solar power output depends on weather and season. My cat likes the garden.",
    "Grid storage lets solar power be used at night. Batteries store energy from solar "
    "panels during the day.",
]


@pytest.fixture
def manager(tmp_path) -> Iterator[SandboxManager]:
    root = tmp_path / "work"
    root.mkdir()
    m = make_manager(root, POLICY)
    yield m
    close_manager(m)


def calc_workflow(manager: SandboxManager) -> Workflow:
    return Workflow("calc", [
        Step("add", tool="calculator", arguments={"expression": "2 + 3"}),
        Step("double", code="result = previous['add'] * 2\nlength = len(task)"),
        Step("show", tool="python", arguments=lambda run: {
            "code": f"result = {run.outputs['double']['result']} + 1"}),
    ], manager=manager)


# -- generic workflows ------------------------------------------------------------------------
async def test_workflow_runs_sandboxed_audited_steps(manager):
    result = await calc_workflow(manager).arun("compute", {"user_id": "alice"})
    assert isinstance(result, WorkflowResult) and result.returned and result.success
    assert result.outputs == {"add": 5, "double": {"result": 10, "length": 7},
                              "show": 11}
    assert [s.outcome for s in result.steps] == ["ok", "ok", "ok"]
    kinds = [(r["event"], r.get("step")) for r in audit_records(manager, "workflow")]
    assert kinds == [("started", None), ("step", "add"), ("step", "double"), ("step", "show"),
                     ("finished", None)]
    executions = audit_records(manager, "execution", user_id="alice")
    assert [e["sandbox_type"] for e in executions] == ["restricted", "process", "process"]
    assert all(e["outcome"] == "ok" for e in executions)
    assert len(audit_records(manager, "authorization", permission="execute_workflow",
                       allowed=True)) == 4  # the run and each step


async def test_workflow_needs_execute_workflow(manager):
    with pytest.raises(PermissionDenied, match="execute_workflow"):
        await calc_workflow(manager).arun("compute", {"user_id": "coder"})
    assert audit_records(manager, "authorization", user_id="coder", permission="execute_workflow",
                   allowed=False)
    assert not audit_records(manager, "execution") and not audit_records(manager, "workflow")


async def test_workflow_without_read_results_runs_but_returns_nothing(manager):
    result = await calc_workflow(manager).arun("compute", {"user_id": "runner"})
    assert result.output is None and result.outputs is None and not result.returned
    assert "read_results" in result.withheld_reason and "withheld" in str(result)
    assert [s.outcome for s in result.steps] == ["ok", "ok", "ok"]  # it did run
    assert len(audit_records(manager, "execution", user_id="runner", outcome="ok")) == 3
    finished = audit_records(manager, "workflow", event="finished")[-1]
    assert finished["results_returned"] is False and finished["user_id"] == "runner"
    assert audit_records(manager, "authorization", user_id="runner", permission="read_results",
                   allowed=False)


async def test_listing_fewer_permissions_withholds_results(manager):
    result = await calc_workflow(manager).arun(
        "compute", {"user_id": "alice", "permissions": ["execute_workflow"]})
    assert not result.returned and result.output is None


async def test_steps_run_on_the_workflow_grant_alone(manager):
    # "runner" holds execute_workflow but not execute: workflow steps still run...
    result = await calc_workflow(manager).arun("compute", {"user_id": "runner"})
    assert all(s.outcome == "ok" for s in result.steps)
    # ... but the same code outside a workflow is refused.
    from agenticraft import Agent

    with pytest.raises(PermissionDenied, match="'execute'"):
        await Agent(manager=manager).execute_secure("result = 1", {"user_id": "runner"})


async def test_failing_step_stops_the_workflow(manager):
    workflow = Workflow("w", [Step("boom", code="raise ValueError('x')"),
                              Step("never", code="result = 1")], manager=manager)
    result = await workflow.arun("t", {"user_id": "alice"})
    assert not result.success and "boom" in result.error and "ValueError" in result.error
    assert [s.name for s in result.steps] == ["boom"]
    assert audit_records(manager, "workflow", event="finished")[-1]["outcome"] == "error"


async def test_denied_step_is_audited_and_raised(manager):
    workflow = Workflow("w", [Step("search", tool="web_search", arguments={"query": "x"})],
                        manager=manager)
    with pytest.raises(PermissionDenied, match="network_access"):
        await workflow.arun("t", {"user_id": "alice"})
    step = audit_records(manager, "workflow", event="step")[-1]
    assert (step["step"], step["outcome"]) == ("search", "denied")
    finished = audit_records(manager, "workflow", event="finished")[-1]
    assert (finished["outcome"], finished["results_returned"]) == ("denied", False)


def test_run_is_synchronous_in_plain_code(manager):
    result = calc_workflow(manager).run(task="compute", user_context={"user_id": "alice"})
    assert result.output == 11


async def test_run_is_awaitable_inside_a_loop(manager):
    result = await calc_workflow(manager).run(task="compute", user_context={"user_id": "alice"})
    assert result.output == 11


def test_step_validation():
    with pytest.raises(ConfigurationError, match="exactly one"):
        Step("s")
    with pytest.raises(ConfigurationError, match="duplicate"):
        Workflow("w", [Step("a", code="x = 1"), Step("a", code="y = 1")])


# -- extractive summarizer (a plain function; in the workflow it runs in the sandbox) ----------
def test_extractive_findings_prefers_on_topic_sentences_and_covers_sources():
    sources = [{"title": "1", "text": DOCS[0].split("\n", 1)[1]}, {"title": "2", "text": DOCS[1]}]
    findings = extractive_findings("solar power", sources, 5)
    texts = [f["text"] for f in findings]
    assert {f["source"] for f in findings} == {1, 2}
    assert not any("cat" in t for t in texts)
    assert texts[0].startswith("Solar power")
    assert extractive_findings("anything", [], 5) == []


# -- ResearchTeam -----------------------------------------------------------------------------
ALICE = {"user_id": "alice@company.com", "permissions": ["execute_workflow", "read_results"],
         "resource_limits": {"memory_mb": 512, "timeout_seconds": 60}}


async def test_research_team_writes_an_extractive_cited_report(manager):
    team = ResearchTeam(documents=DOCS, manager=manager)
    report = await team.research(topic="solar power", user_context=ALICE)
    assert isinstance(report, ResearchReport) and report.returned
    assert report.method == "extractive" and report.user_id == "alice@company.com"
    assert [s.title for s in report.sources] == ["Solar power", "Document 2"]
    assert set(report.citations) == {1, 2}
    assert "## Sources" in report.content and "[2] Document 2" in report.content
    assert "cat" not in report.content
    summarize = audit_records(manager, "execution", action="workflow:research_team:summarize")
    assert summarize and summarize[0]["sandbox_type"] == "process"
    assert [s.name for s in report.steps] == ["gather", "summarize"]


async def test_research_team_reads_files_only_with_filesystem_access(manager):
    notes = Path(manager.working_dir) / "notes.txt"
    notes.write_text("Wind power turns moving air into electricity with turbines.")
    team = ResearchTeam(documents=[notes], manager=manager)
    denied = await team.research(topic="wind power", user_context={"user_id": "alice"})
    assert denied.sources == [] and any("filesystem_access" in n for n in denied.notes)
    assert audit_records(manager, "tool", name="read_file", outcome="denied")
    allowed = await team.research(topic="wind power", user_context={
        "user_id": "alice", "resource_limits": {"filesystem_access": True}})
    assert [s.origin for s in allowed.sources] == [str(notes)]
    assert "Wind power turns moving air" in allowed.content and allowed.citations == [1]


async def test_research_team_uses_web_search_only_with_network(manager):
    with serve(search_handler) as server:
        team = ResearchTeam(search_backend=WebSearchBackend(server.url), manager=manager)
        offline = await team.research(topic="AI safety", user_context={"user_id": "alice"})
        assert offline.sources == [] and server.requests == []
        assert any("network_access" in n for n in offline.notes)
        online = await team.research(topic="AI safety", user_context={
            "user_id": "alice", "resource_limits": {"network_access": True}})
    assert [s.title for s in online.sources] == ["AI safety primer", "Python security guide"]
    assert 1 in online.citations and "[1] AI safety primer" in online.content
    assert audit_records(manager, "tool", name="web_search", outcome="ok", workflow="research_team")


async def test_research_team_with_a_model_provider(manager):
    seen: list[list[dict]] = []

    def writer(messages):
        seen.append(messages)
        return "Solar panels make electricity [1] and batteries store it [2]; see also [9]."

    team = ResearchTeam(documents=DOCS, provider=writer, manager=manager)
    report = await team.research(topic="solar power", user_context=ALICE)
    assert report.method == "model"
    assert report.content.startswith("Solar panels make electricity [1]")
    assert "## Sources" in report.content and "[1] Solar power" in report.content
    assert any("unknown sources [9]" in n for n in report.notes)
    assert "[2] Document 2" in seen[0][1]["content"]
    step = audit_records(manager, "workflow", event="step", step="write")[-1]
    assert (step["kind"], step["outcome"]) == ("model", "ok")


async def test_research_report_is_withheld_without_read_results(manager):
    team = ResearchTeam(documents=DOCS, provider=lambda m: "written", manager=manager)
    report = await team.research(topic="solar power", user_context={
        "user_id": "alice", "permissions": ["execute_workflow"]})
    assert report.content is None and report.sources == [] and report.findings == []
    assert report.notes == [] and report.method is None
    assert "read_results" in report.withheld_reason and str(report).startswith("[report withh")
    assert [s.name for s in report.steps] == ["gather", "summarize", "write"]  # it ran
    assert audit_records(manager, "workflow", event="finished")[-1]["results_returned"] is False


def test_research_team_run_task_form(manager):
    report = ResearchTeam(documents=DOCS, manager=manager).run(
        task="solar power", user_context={"user_id": "alice"})
    assert report.returned and report.citations


def test_documents_are_text_or_paths(manager):
    team = ResearchTeam(documents=[42], manager=manager)
    with pytest.raises(ConfigurationError, match="document 1"):
        asyncio.run(team.research("x", user_context={"user_id": "a"}))


def test_policy_network_default_lets_team_search(tmp_path):
    manager = make_manager(tmp_path, Policy(defaults=ResourceLimits(network_access=True)))
    try:
        with serve(search_handler) as server:
            team = ResearchTeam(search_backend=WebSearchBackend(server.url), manager=manager)
            report = team.run(task="AI safety", user_context={"user_id": "bob"})
        assert report.sources and server.requests
    finally:
        close_manager(manager)
