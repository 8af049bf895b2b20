"""Every code block of the specification (security-sandbox.md), run as written.

Each Python block is extracted from the specification and executed unchanged. The harness adds
only what the brief allows: the surrounding ``asyncio.run`` for blocks that use top-level
``await``, and the data a block needs (an earlier block's ``agent``/``code``, names the
specification uses without importing them, an administrator policy, environment variables,
loopback servers). Blocks share a namespace in document order where the specification relies on
it (``agent`` and ``code`` defined earlier). Printed and returned values are asserted, and so
are the audit records each example leaves.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import inspect
import io
import os
import re
from pathlib import Path
from typing import Any

import pytest

from agenticraft.agents.auth import HMACAuthenticator
from agenticraft.agents.tools import close_default_manager, set_default_manager
from agenticraft.sandbox import SandboxManager, SandboxType
from agenticraft.security import ResourceLimits, SecurityContext
from agenticraft.security.audit import AuditLog
from agenticraft.security.config import load_settings
from agenticraft.security.context import current_user
from agenticraft.security.exceptions import PermissionDenied
from agenticraft.security.policy import Policy
from agenticraft.workflows import ResearchReport, ResearchTeam

from http_helpers import SEARCH_RESULTS

SPEC_CANDIDATES = (
    os.environ.get("AGENTICRAFT_SPEC", ""),
    # the user's specification as shared beside the repository (here and in CI) ...
    str(Path(__file__).resolve().parents[2] / "shared" / "spec" / "security-sandbox.md"),
    # ... and the copy kept in the repository
    str(Path(__file__).resolve().parents[1] / "docs" / "spec" / "security-sandbox.md"),
)

#: (heading the block sits under, a line it must contain) for every Python block, in order.
INVENTORY = [
    ("Basic Secure Agent", "result = await agent.execute_secure(code)"),
    ("Secure Workflow Execution", "report = await team.research("),
    ("1. Restricted Python Sandbox", 'sandbox_type="restricted"'),
    ("2. Process Sandbox", 'sandbox_type="process"'),
    ("Security Context", "context = SecurityContext("),
    ("Custom Sandbox Manager", "manager = SandboxManager()"),
    ("Secure Tool Execution", '"web_search",'),
    ("Audit Logging", "# - Authentication attempts"),
    ("Best Practices", "agent = Agent(sandbox_enabled=True)"),
    ("Best Practices", "memory_limit=128"),
    ("Best Practices", 'permissions=["execute", "read_results"]'),
    ("Best Practices", "result.resource_usage['memory_mb']"),
    ("Error Handling", "except ResourceLimitExceeded as e:"),
    ("Config File", "SECURITY_CONFIG = {"),
    ("Existing Code", 'response = agent.run("Calculate 2+2")'),
    ("Workflows", 'workflow.run(task="Research AI")'),
]

DOCUMENT = ("AI research notes\n"
            "Research on AI covers learning systems that generalise from data. "
            "AI research also studies how models can be evaluated for safety before they are "
            "deployed. Unrelated sentence about gardening tools and soil.")


def spec_text() -> str:
    for candidate in SPEC_CANDIDATES:
        if candidate and Path(candidate).is_file():
            return Path(candidate).read_text()
    pytest.fail("security-sandbox.md not found; set AGENTICRAFT_SPEC to its path "
                f"(looked in {[c for c in SPEC_CANDIDATES if c]})")


def code_blocks(language: str) -> list[tuple[str, str]]:
    """(heading, dedented source) of every fenced block in ``language``, in order."""
    blocks, heading, lines = [], "", spec_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        fence = re.match(r"^(\s*)```(\w*)\s*$", line)
        if fence:
            indent, lang = fence.group(1), fence.group(2)
            body = []
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
                i += 1
            if lang == language:
                blocks.append((heading, "\n".join(body) + "\n"))
        i += 1
    return blocks


def block(index: int) -> str:
    heading, marker = INVENTORY[index]
    found_heading, source = code_blocks("python")[index]
    assert (found_heading, marker in source) == (heading, True), (index, found_heading)
    return source


def run_block(source: str, ns: dict[str, Any], out: io.StringIO | None = None) -> str:
    """Run a block as written; top-level ``await`` gets the surrounding ``asyncio.run``."""
    out = out if out is not None else io.StringIO()
    code = compile(source, "<specification>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    with contextlib.redirect_stdout(out):
        if code.co_flags & inspect.CO_COROUTINE:
            asyncio.run(eval(code, ns))
        else:
            exec(code, ns)
    return out.getvalue()


class SpecEnv:
    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tmp = tmp
        self.monkeypatch = monkeypatch
        self.audit = AuditLog(tmp / "audit.jsonl")

    def install(self, policy: Policy | None = None) -> SandboxManager:
        """The administrator's policy for this test (settings come from the environment)."""
        close_default_manager()
        manager = SandboxManager(policy=policy or Policy())
        set_default_manager(manager)
        return manager

    def records(self, kind: str | None = None, **match: Any) -> list[dict[str, Any]]:
        return [r for r in self.audit.query(event_type=kind)
                if all(r.get(k) == v for k, v in match.items())]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for var in list(os.environ):
        if var.startswith("AGENTICRAFT_") and var != "AGENTICRAFT_SPEC":
            monkeypatch.delenv(var)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("AGENTICRAFT_AUDIT_LOG", str(tmp_path / "audit.jsonl"))
    monkeypatch.chdir(tmp_path)
    previous = set_default_manager(None)
    spec = SpecEnv(tmp_path, monkeypatch)
    spec.install()
    yield spec
    close_default_manager()
    set_default_manager(previous)
    assert spec.audit.verify().ok


def names() -> dict[str, Any]:
    """A fresh namespace holding ``Agent``, which later blocks use without importing it."""
    from agenticraft import Agent

    return {"Agent": Agent}


# -- the inventory ----------------------------------------------------------------------------
def test_every_python_block_is_checked():
    blocks = code_blocks("python")
    assert [(h, m in s) for (h, s), (_, m) in zip(blocks, INVENTORY, strict=False)] == \
        [(h, True) for h, _ in INVENTORY]
    assert len(blocks) == len(INVENTORY)
    assert len(code_blocks("bash")) == 1


# -- Quick Start ------------------------------------------------------------------------------
def test_basic_secure_agent_prints_result(env):
    ns = names()
    out = run_block(block(0), ns)
    assert out == '{"result": 15}\n'
    assert ns["result"]["result"] == 15 and ns["result"].sandbox_type == "restricted"
    execution = env.records("execution")[-1]
    assert execution["outcome"] == "ok" and execution["action"] == "execute_secure"
    assert execution["sandbox_type"] == "restricted"
    assert (execution["limits"]["memory_mb"], execution["limits"]["cpu_percent"]) == (256, 50.0)
    decision = env.records("authorization")[-1]
    assert (decision["permission"], decision["allowed"], decision["user_id"]) == \
        ("execute", True, current_user())


def test_secure_workflow_execution_returns_report_offline(env):
    ns = names()
    run_block(block(1), ns)
    report = ns["report"]
    assert isinstance(report, ResearchReport) and report.returned
    assert report.user_id == "alice@company.com" and report.method == "extractive"
    assert report.content.startswith("# Research report: AI safety")
    assert "No sources were available" in report.content and report.sources == []
    finished = env.records("workflow", event="finished", user_id="alice@company.com")
    assert finished[-1]["results_returned"] is True
    assert env.records("authorization", permission="execute_workflow", allowed=True,
                       user_id="alice@company.com")


def test_secure_workflow_execution_cites_web_sources_when_network_is_allowed(env,
                                                                             search_server):
    env.install(Policy(defaults=ResourceLimits(network_access=True)))
    env.monkeypatch.setenv("AGENTICRAFT_SEARCH_URL", search_server.url)
    ns = names()
    run_block(block(1), ns)
    report = ns["report"]
    assert report.returned and [s.origin for s in report.sources] == \
        [r["url"] for r in SEARCH_RESULTS]
    assert report.citations and set(report.citations) <= {1, 2}
    assert "AI safety research aims to make AI systems robust" in report.content
    assert "[1] AI safety primer (http://127.0.0.1/primer)" in report.content
    assert "q=AI+safety" in search_server.requests[0]["path"]
    tool = env.records("tool", name="web_search", user_id="alice@company.com")[-1]
    assert tool["outcome"] == "ok" and tool["workflow"] == "research_team"


# -- Sandbox types and the security context -----------------------------------------------------
@pytest.mark.parametrize(("index", "kind"), [(2, "restricted"), (3, "process")])
def test_sandbox_type_blocks(env, index, kind):
    ns = names()
    run_block(block(index), ns)
    agent = ns["agent"]
    assert agent.sandbox_enabled and agent.sandbox_type == kind
    result = asyncio.run(agent.execute_secure("result = 6 * 7"))
    assert result["result"] == 42 and result.sandbox_type == kind
    assert env.records("execution")[-1]["sandbox_type"] == kind


def test_security_context_block_is_a_request_resolved_by_the_policy(env):
    ns = names()
    run_block(block(4), ns)
    context = ns["context"]
    assert context.user_id == "user@example.com" and not context.resolved
    assert {"execute", "read_results", "write"} <= context.permissions
    from agenticraft import Agent

    result = asyncio.run(Agent().execute_secure("result = 1", user_context=context))
    assert result["result"] == 1
    limits = env.records("execution", user_id="user@example.com")[-1]["limits"]
    assert limits == {**ResourceLimits().as_dict(), "memory_mb": 512, "cpu_percent": 50.0,
                      "timeout_seconds": 30.0}


def test_custom_sandbox_manager_block(env):
    # The block uses SandboxType and SecurityContext without importing them: data it needs.
    ns: dict[str, Any] = {"SandboxType": SandboxType, "SecurityContext": SecurityContext}
    try:
        out = run_block(block(5), ns)
    finally:
        if "manager" in ns:
            asyncio.run(ns["manager"].close())
    result = ns["result"]
    assert out == ""  # the sandbox's print is captured in the result, not the host's stdout
    assert result.success and result.stdout == "Hello\n" and result.sandbox_type == "process"
    assert env.records("execution", user_id="custom")[-1]["outcome"] == "ok"


# -- Secure tool execution --------------------------------------------------------------------
def test_secure_tool_execution_is_denied_without_network(env, search_server):
    env.monkeypatch.setenv("AGENTICRAFT_SEARCH_URL", search_server.url)  # a backend exists
    ns = names()
    run_block(block(3), ns)  # the process agent defined just before in the specification
    with pytest.raises(PermissionDenied, match="network_access") as info:
        run_block(block(6), ns)
    assert info.value.permission == "network_access" and info.value.user_id == "alice"
    assert search_server.requests == []  # nothing ran
    assert env.records("tool", name="web_search")[-1]["outcome"] == "denied"
    assert env.records("authorization", permission="network_access", allowed=False,
                       user_id="alice", action="tool:web_search")
    assert not env.records("execution", action="tool:web_search")


def test_secure_tool_execution_succeeds_when_policy_allows_network(env, search_server):
    env.install(Policy(defaults=ResourceLimits(network_access=True)))
    env.monkeypatch.setenv("AGENTICRAFT_SEARCH_URL", search_server.url)
    ns = names()
    run_block(block(3), ns)
    run_block(block(6), ns)
    assert ns["result"]["result"] == SEARCH_RESULTS[:5]
    assert "q=Python+security" in search_server.requests[0]["path"]
    execution = env.records("execution", action="tool:web_search")[-1]
    assert execution["outcome"] == "ok" and execution["limits"]["network_access"] is True
    assert env.records("tool", name="web_search", user_id="alice")[-1]["outcome"] == "ok"


# -- Audit logging ------------------------------------------------------------------------------
def test_audit_logging_block_claims_hold(env):
    from agenticraft import Agent
    from agenticraft.agents.auth import AuthenticationError

    run_block(block(7), {})  # comments only: the claims are checked below
    auth = HMACAuthenticator("s" * 32)
    agent = Agent(sandbox_type="process", memory_limit=128, authenticator=auth)
    token = auth.sign({"user_id": "alice"})
    assert asyncio.run(agent.execute_secure("result = 1", {"token": token}))["result"] == 1
    with pytest.raises(AuthenticationError):
        asyncio.run(agent.execute_secure("result = 1", {"token": token + "x"}))
    with pytest.raises(Exception, match="memory_mb"):
        asyncio.run(agent.execute_secure("x = bytearray(2 * 1024 ** 3)", {"token": token}))
    assert [r["success"] for r in env.records("authentication")] == [True, False, True]
    assert env.records("authorization", user_id="alice", allowed=True)
    assert env.records("violation", user_id="alice", limit="memory_mb")
    assert {r["outcome"] for r in env.records("execution", user_id="alice")} == \
        {"ok", "limit_exceeded"}


# -- Best practices ---------------------------------------------------------------------------
def test_best_practice_always_enable_sandbox(env):
    ns = names()
    run_block(block(8), ns)
    assert ns["agent"].sandbox_enabled
    assert asyncio.run(ns["agent"].execute_secure("result = 2"))["result"] == 2


def test_best_practice_resource_limits(env):
    from agenticraft import Agent

    source = block(9)
    run_block(source, {})
    assigned = [(node.targets[0].id, node.value.value) for node in ast.parse(source).body
                if isinstance(node, ast.Assign)]
    pairs = [dict(assigned[i:i + 2]) for i in range(0, len(assigned), 2)]
    assert pairs == [{"memory_limit": 128, "timeout": 10}, {"memory_limit": 1024, "timeout": 60}]
    for pair in pairs:
        asyncio.run(Agent(**pair).execute_secure("result = 1"))
        limits = env.records("execution")[-1]["limits"]
        assert (limits["memory_mb"], limits["timeout_seconds"]) == \
            (pair["memory_limit"], pair["timeout"])


def test_best_practice_least_privilege(env):
    from agenticraft import Agent
    from agenticraft.workflows import Workflow

    ns = names()
    run_block(block(10), ns)
    context = {"user_id": "dana", "permissions": ns["permissions"]}
    assert asyncio.run(Agent().execute_secure("result = 3", context))["result"] == 3
    with pytest.raises(PermissionDenied, match="execute_workflow"):
        Workflow("w").run(task="t", user_context=context)
    assert env.records("authorization", user_id="dana", permission="execute_workflow",
                       allowed=False)


def test_best_practice_monitor_resource_usage(env):
    ns = names()
    run_block(block(0), ns)  # defines agent and code
    out = run_block(block(11), ns)
    match = re.fullmatch(r"Memory used: ([\d.]+)MB\nTime taken: ([\d.]+)ms\n", out)
    assert match, out
    assert float(match.group(1)) > 0 and float(match.group(2)) > 0
    assert float(match.group(1)) == ns["result"].resource_usage["memory_mb"]


# -- Error handling: each branch by a real violation ------------------------------------------
CHANNEL_GARBAGE = "import os\nos.write(3, b'\\xff' * 64)\nimport time\ntime.sleep(5)"


@pytest.mark.parametrize(("case", "agent_kwargs", "code", "printed", "audit"), [
    ("ungranted user", {"user_context": {"user_id": "intern"}}, "result = 1",
     "Access denied: Permission denied: user 'intern' lacks the 'execute' permission",
     ("authorization", {"user_id": "intern", "allowed": False})),
    ("above the ceiling", {"memory_limit": 8192}, "result = 1",
     "Access denied: Permission denied: memory_mb=8192 is above the administrator's ceiling",
     ("authorization", {"allowed": False, "permission": "execute"})),
    ("code policy", {"sandbox_type": "restricted"}, "import os",
     "Access denied: ", ("violation", {"limit": "code_policy"})),
    ("memory", {"sandbox_type": "process", "memory_limit": 128}, "x = bytearray(2 * 1024 ** 3)",
     "Resource limit hit: Resource limit exceeded: memory_mb",
     ("violation", {"limit": "memory_mb"})),
    ("timeout", {"sandbox_type": "process", "timeout": 1}, "while True:\n    pass",
     "Resource limit hit: Resource limit exceeded: timeout_seconds",
     ("violation", {"limit": "timeout_seconds"})),
    ("sandbox error", {"sandbox_type": "process"}, CHANNEL_GARBAGE,
     "Security error: the sandboxed code corrupted the control channel",
     ("execution", {"outcome": "sandbox_error"})),
])
def test_error_handling_block(env, case, agent_kwargs, code, printed, audit):
    from agenticraft import Agent

    env.install(Policy.from_dict({"grants": {"users": {"intern": []}}}))
    ns: dict[str, Any] = {"agent": Agent(**agent_kwargs), "code": code}
    out = run_block(block(12), ns)
    assert out.startswith(printed), out
    assert out.count("\n") == 1
    kind, fields = audit
    assert env.records(kind, **fields), (case, env.records(kind))


# -- Configuration ----------------------------------------------------------------------------
def _exports() -> dict[str, str]:
    (_, source), = code_blocks("bash")
    return dict(re.findall(r"^export (\w+)=(\S+)$", source, re.MULTILINE))


def test_environment_variables_block(env):
    from agenticraft import Agent

    exports = _exports()
    assert exports == {"AGENTICRAFT_DEFAULT_SANDBOX": "process",
                       "AGENTICRAFT_DEFAULT_MEMORY_MB": "512", "AGENTICRAFT_DEFAULT_TIMEOUT": "30"}
    for var, value in exports.items():
        env.monkeypatch.setenv(var, value)
    settings = load_settings()
    assert {k: v for k, v in settings.origins.items() if k != "audit_log_path"} == {
        "default_sandbox_type": "environment AGENTICRAFT_DEFAULT_SANDBOX",
        "memory_mb": "environment AGENTICRAFT_DEFAULT_MEMORY_MB",
        "timeout_seconds": "environment AGENTICRAFT_DEFAULT_TIMEOUT"}
    env.install()
    result = asyncio.run(Agent().execute_secure("result = 1"))
    assert result.sandbox_type == "process"
    limits = env.records("execution")[-1]["limits"]
    assert (limits["memory_mb"], limits["timeout_seconds"]) == (512, 30.0)
    # The same variables with other values change what runs: they are really applied.
    env.monkeypatch.setenv("AGENTICRAFT_DEFAULT_SANDBOX", "restricted")
    env.monkeypatch.setenv("AGENTICRAFT_DEFAULT_MEMORY_MB", "300")
    env.monkeypatch.setenv("AGENTICRAFT_DEFAULT_TIMEOUT", "7")
    env.install()
    assert asyncio.run(Agent().execute_secure("result = 1")).sandbox_type == "restricted"
    limits = env.records("execution")[-1]["limits"]
    assert (limits["memory_mb"], limits["timeout_seconds"]) == (300, 7.0)


def test_config_file_block(env):
    from agenticraft import Agent

    source = block(13)
    ns = names()
    run_block(source, ns)
    assert ns["SECURITY_CONFIG"]["default_memory_mb"] == 256
    config = env.tmp / "config" / "agenticraft" / "config.py"  # the standard location
    config.parent.mkdir(parents=True)
    config.write_text(source)
    env.install()
    result = asyncio.run(Agent().execute_secure("result = 1"))
    assert result.sandbox_type == "restricted"
    limits = env.records("execution")[-1]["limits"]
    assert (limits["memory_mb"], limits["cpu_percent"]) == (256, 50.0)
    # Environment beats the config file.
    env.monkeypatch.setenv("AGENTICRAFT_DEFAULT_SANDBOX", "process")
    env.install()
    assert asyncio.run(Agent().execute_secure("result = 1")).sandbox_type == "process"
    # enable_audit_logging is honoured.
    count = len(env.records())
    config.write_text(source.replace('"enable_audit_logging": True',
                                     '"enable_audit_logging": False'))
    env.install()
    assert asyncio.run(Agent().execute_secure("result = 1"))["result"] == 1
    assert len(env.records()) == count


# -- Migration guide --------------------------------------------------------------------------
def test_migration_agent_run_without_provider_says_how_to_configure(env):
    from agenticraft.agents.agent import ProviderNotConfigured

    ns = names()
    with pytest.raises(ProviderNotConfigured) as info:
        run_block(block(14), ns)
    message = str(info.value)
    assert "provider=" in message and "AGENTICRAFT_PROVIDER_URL" in message
    assert "execute_secure" in message
    assert "response" not in ns


def test_migration_agent_run_with_a_configured_provider(env, chat_server):
    env.monkeypatch.setenv("AGENTICRAFT_PROVIDER_URL", chat_server.url + "/v1")
    env.monkeypatch.setenv("AGENTICRAFT_PROVIDER_MODEL", "fake-model")
    ns = names()
    run_block(block(14), ns)
    response = ns["response"]
    assert str(response) == "The answer is 4."
    assert response.steps[0].kind == "code" and response.steps[0].result["result"] == 4
    assert len(chat_server.requests) == 4  # two runs, each: ask -> code -> answer
    assert len(env.records("execution", action="execute_secure", agent="MyAgent")) == 2


class RecordingTeam(ResearchTeam):
    """ResearchTeam that also keeps what it returned (the block discards the return value)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.returned: list[ResearchReport] = []

    def package(self, *args: Any) -> ResearchReport:
        report = super().package(*args)
        self.returned.append(report)
        return report


def test_migration_workflow_blocks(env):
    workflow = RecordingTeam(documents=[DOCUMENT])
    run_block(block(15), {"workflow": workflow})
    before, after = workflow.returned
    assert before.returned and before.citations == [1] and "AI research" in before.content
    assert after.content is None and after.sources == []
    assert "read_results" in after.withheld_reason
    finished = env.records("workflow", event="finished")
    assert [r["results_returned"] for r in finished] == [True, False]
    assert finished[1]["user_id"] == "alice"
    assert env.records("authorization", user_id="alice", permission="read_results",
                       allowed=False)
    assert env.records("tool", user_id="alice", name="summarize", outcome="ok")
