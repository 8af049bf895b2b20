"""Agent: execute_secure on both sandboxes, forged contexts, unsandboxed mode, the model loop,
the shared manager."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agenticraft import Agent
from agenticraft.agents.agent import AgentResponse, ProviderNotConfigured
from agenticraft.agents.tools import close_default_manager, default_manager, set_default_manager
from agenticraft.agents.tools.runtime import close_manager
from agenticraft.sandbox import SandboxManager
from agenticraft.security import ResourceLimits, SecurityContext
from agenticraft.security.context import current_user
from agenticraft.security.policy import Policy
from agenticraft.wire.errors import (
    ConfigurationError,
    PermissionDenied,
    ResourceLimitExceeded,
)

from helpers import audit_records, make_manager, wait_gone

pytestmark = pytest.mark.usefixtures("isolated_agent_state")


POLICY = Policy.from_dict({
    "ceilings": {"memory_mb": 1024, "timeout_seconds": 60},
    "grants": {"default": ["execute", "read_results"],
               "users": {"mallory": [], "root-admin": ["admin"]},
               "groups": {"admins": ["admin"]}},
    "groups": {"admins": ["ada"]},
})


@pytest.fixture
def managers(tmp_path: Path) -> Iterator[Callable[..., SandboxManager]]:
    """Make isolated managers (own audit log and working dir); all closed afterwards."""
    made: list[SandboxManager] = []

    def make(policy: Policy | None = POLICY, name: str = "m") -> SandboxManager:
        root = tmp_path / f"{name}{len(made)}"
        root.mkdir()
        manager = make_manager(root, policy)
        made.append(manager)
        return manager

    yield make
    for manager in made:
        close_manager(manager)


# -- execute_secure ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["restricted", "process"])
async def test_execute_secure_returns_bound_names(managers, kind):
    manager = managers()
    agent = Agent(name="calc", sandbox_type=kind, memory_limit=256, cpu_limit=50.0, timeout=10,
                  manager=manager)
    result = await agent.execute_secure("result = sum([1, 2, 3, 4, 5])",
                                        user_context={"user_id": "alice"})
    assert str(result) == '{"result": 15}'
    assert result.sandbox_type == kind and result.success
    assert result.resource_usage["memory_mb"] > 0 and result.execution_time_ms > 0
    decision, = audit_records(manager, "authorization", user_id="alice")
    assert (decision["permission"], decision["allowed"], decision["sandbox_type"]) == \
        ("execute", True, kind)
    execution, = audit_records(manager, "execution", user_id="alice")
    assert execution["outcome"] == "ok" and execution["agent"] == "calc"
    assert (execution["limits"]["memory_mb"], execution["limits"]["cpu_percent"],
            execution["limits"]["timeout_seconds"]) == (256, 50.0, 10.0)


async def test_code_errors_are_results_and_limits_raise(managers):
    manager = managers()
    agent = Agent(sandbox_type="process", memory_limit=128, manager=manager)
    failed = await agent.execute_secure("x = 1\nraise ValueError('nope')")
    assert not failed.success and failed.error.ename == "ValueError"
    with pytest.raises(ResourceLimitExceeded) as info:
        await agent.execute_secure("x = bytearray(2 * 1024 ** 3)")
    assert info.value.limit == "memory_mb"
    assert audit_records(manager, "violation", limit="memory_mb")


def test_agent_limits_are_validated_at_construction():
    with pytest.raises(ConfigurationError, match="memory_mb"):
        Agent(memory_limit=-1)
    with pytest.raises(ConfigurationError, match="sandbox type"):
        Agent(sandbox_type="vm")
    assert Agent(timeout=5, cpu_limit=25).limits == {"timeout_seconds": 5.0, "cpu_percent": 25.0}


# -- user_context is not self-asserted ----------------------------------------------------------
@pytest.mark.parametrize(("context", "needle"), [
    ({"user_id": "alice", "permissions": ["admin"]}, "asked for admin"),
    ({"user_id": "mallory", "permissions": ["execute"]}, "asked for execute"),
    ({"user_id": "mallory"}, "lacks the 'execute' permission"),
    ({"user_id": "eve", "groups": ["admins"], "permissions": ["admin"]}, "asked for admin"),
    (SecurityContext("alice", ["admin"], _resolved=True), "asked for admin"),
    ({"user_id": "alice", "resource_limits": {"memory_mb": 4096}}, "ceiling memory_mb=1024"),
    ({"user_id": "alice", "resource_limits": {"timeout_seconds": 600}}, "ceiling"),
])
async def test_forged_user_context_gains_nothing(managers, context, needle):
    manager = managers()
    agent = Agent(sandbox_type="restricted", manager=manager)
    with pytest.raises(PermissionDenied, match=needle):
        await agent.execute_secure("result = 1", user_context=context)
    user = context.user_id if isinstance(context, SecurityContext) else context["user_id"]
    denial, = audit_records(manager, "authorization", user_id=user)
    assert denial["allowed"] is False and denial["action"] == "execute_secure"
    assert not audit_records(manager, "execution")  # nothing ran


async def test_permissions_come_from_the_policy(managers):
    manager = managers()
    agent = Agent(sandbox_type="restricted", manager=manager)
    await agent.execute_secure("result = 1", {"user_id": "ada"})  # admin through her group
    await agent.execute_secure("result = 1", {"user_id": "alice"})
    ada, alice = audit_records(manager, "authorization")
    assert ada["user_id"] == "ada" and alice["user_id"] == "alice"
    assert POLICY.resolve({"user_id": "ada"}).has_permission("admin")
    assert not POLICY.resolve({"user_id": "alice"}).has_permission("write")


async def test_user_context_tightens_but_never_loosens_agent_limits(managers):
    manager = managers()
    agent = Agent(sandbox_type="restricted", memory_limit=128, timeout=20, manager=manager)
    await agent.execute_secure("result = 1", {"user_id": "alice", "resource_limits": {
        "memory_mb": 1000, "timeout_seconds": 5}})
    limits = audit_records(manager, "execution")[-1]["limits"]
    assert (limits["memory_mb"], limits["timeout_seconds"]) == (128, 5.0)


async def test_working_dir_may_narrow_but_not_widen(managers, tmp_path):
    manager = managers()
    agent = Agent(sandbox_type="process", manager=manager)
    with pytest.raises(PermissionDenied, match="working_dir"):
        await agent.execute_secure("result = 1", {"user_id": "alice", "working_dir": "/"})
    assert audit_records(manager, "authorization", permission="working_dir", allowed=False)
    inner = Path(manager.working_dir) / "sub"
    inner.mkdir()
    result = await agent.execute_secure("result = 1", {"user_id": "alice",
                                                       "working_dir": str(inner)})
    assert result["result"] == 1


async def test_default_user_is_the_os_user(managers):
    manager = managers()
    await Agent(sandbox_type="restricted", manager=manager).execute_secure("result = 1")
    assert audit_records(manager, "execution")[-1]["user_id"] == current_user()
    agent = Agent(sandbox_type="restricted", manager=manager, user_context={"user_id": "svc"})
    await agent.execute_secure("result = 1")
    assert audit_records(manager, "execution")[-1]["user_id"] == "svc"


async def test_credentials_without_an_authenticator_are_refused(managers):
    agent = Agent(manager=managers())
    with pytest.raises(ConfigurationError, match="no authenticator"):
        await agent.execute_secure("result = 1", {"user_id": "alice", "token": "x.y"})


# -- sandbox_enabled=False ----------------------------------------------------------------------
async def test_unsandboxed_is_refused_unless_the_policy_allows_it(managers):
    manager = managers()
    agent = Agent(name="raw", sandbox_enabled=False, manager=manager)
    with pytest.raises(PermissionDenied, match="allow_unsandboxed"):
        await agent.execute_secure("import os\nresult = os.getpid()", {"user_id": "alice"})
    denial = audit_records(manager, "authorization", permission="unsandboxed_execution")[-1]
    assert denial["allowed"] is False and denial["agent"] == "raw"
    assert not audit_records(manager, "execution")

    permissive = managers(Policy.from_dict({"sandbox": {"allow_unsandboxed": True}}))
    agent = Agent(name="raw", sandbox_enabled=False, manager=permissive)
    result = await agent.execute_secure("import os\nprint('hi')\nresult = os.getpid()",
                                        {"user_id": "alice"})
    assert result["result"] == os.getpid()  # really in this process: no isolation at all
    assert result.sandbox_type == "none" and result.stdout == "hi\n"
    allowed = audit_records(permissive, "authorization", permission="unsandboxed_execution")[-1]
    assert allowed["allowed"] is True
    assert audit_records(permissive, "execution")[-1]["sandbox_type"] == "none"
    # ... and the execute permission is still required.
    with pytest.raises(PermissionDenied):
        await agent.execute_secure("result = 1", {"user_id": "alice", "permissions": ["write"]})


# -- the shared manager -------------------------------------------------------------------------
@pytest.fixture
def isolated_default(tmp_path, monkeypatch):
    monkeypatch.setenv("AGENTICRAFT_AUDIT_LOG", str(tmp_path / "default-audit.jsonl"))
    monkeypatch.delenv("AGENTICRAFT_DEFAULT_SANDBOX", raising=False)
    monkeypatch.chdir(tmp_path)
    previous = set_default_manager(None)
    yield tmp_path
    close_default_manager()
    set_default_manager(previous)


def test_agents_share_one_default_manager_that_survives_event_loops(isolated_default):
    a, b = Agent(sandbox_type="restricted"), Agent(sandbox_type="process")
    assert a.manager is b.manager is default_manager()
    for _ in range(3):  # each asyncio.run is a new, short-lived loop
        assert asyncio.run(a.execute_secure("result = 2 + 2"))["result"] == 4
        assert asyncio.run(b.execute_secure("result = 3 + 3"))["result"] == 6
    assert default_manager().audit.path == isolated_default / "default-audit.jsonl"


def test_closing_the_default_manager_leaves_no_process(isolated_default):
    import psutil

    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    asyncio.run(Agent(sandbox_type="process").execute_secure("result = 1"))
    asyncio.run(Agent(sandbox_type="restricted").execute_secure("result = 1"))
    children = [p for p in me.children(recursive=True) if p.pid not in before]
    assert len(children) >= 2, "both sandboxes should have started a zygote"
    close_default_manager()
    for child in children:
        assert wait_gone(child.pid), child


async def test_eight_concurrent_callers(managers):
    manager = managers()
    agents = [Agent(sandbox_type=kind, manager=manager) for kind in ("restricted", "process")]
    results = await asyncio.gather(*[
        agents[i % 2].execute_secure(f"result = {i} * 10", {"user_id": f"u{i}"})
        for i in range(8)])
    assert [r["result"] for r in results] == [i * 10 for i in range(8)]
    assert len(audit_records(manager, "execution", outcome="ok")) == 8


# -- Agent.run and providers ------------------------------------------------------------------
def scripted(*replies: Any) -> Callable[[list[dict]], Any]:
    """A provider callable that answers with ``replies`` in turn and keeps the messages."""
    queue = list(replies)

    def provider(messages: list[dict]) -> Any:
        provider.calls.append([dict(m) for m in messages])  # type: ignore[attr-defined]
        return queue.pop(0)

    provider.calls = []  # type: ignore[attr-defined]
    return provider


def test_run_without_provider_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("AGENTICRAFT_PROVIDER_URL", raising=False)
    with pytest.raises(ProviderNotConfigured, match="provider=") as info:
        Agent(name="MyAgent").run("Calculate 2+2")
    assert "MyAgent" in str(info.value) and "AGENTICRAFT_PROVIDER_URL" in str(info.value)


def test_run_is_synchronous_in_plain_code(managers):
    manager = managers()
    provider = scripted("```python\nresult = 2 + 2\n```", "It is 4.")
    agent = Agent(sandbox_type="restricted", provider=provider, manager=manager)
    response = agent.run("Calculate 2+2", user_context={"user_id": "alice"})
    assert isinstance(response, AgentResponse) and str(response) == "It is 4."
    assert response.steps[0].result["result"] == 4
    feedback = provider.calls[1][-1]
    assert feedback["role"] == "user" and '"result": 4' in feedback["content"]
    assert audit_records(manager, "authorization", action="agent.run", user_id="alice")
    assert audit_records(manager, "execution", action="execute_secure", user_id="alice")


async def test_run_is_awaitable_inside_a_loop_and_runs_tool_calls(managers):
    manager = managers()

    async def provider(messages, tools):
        if messages[-1]["role"] == "tool":
            return f"calculator said {messages[-1]['content']}"
        assert {t["function"]["name"] for t in tools} >= {"calculator", "web_search"}
        return {"content": "", "tool_calls": [
            {"id": "c1", "function": {"name": "calculator",
                                      "arguments": '{"expression": "6 * 7"}'}}]}

    agent = Agent(provider=provider, manager=manager)
    response = await agent.run("What is 6 * 7?", user_context={"user_id": "alice"})
    assert '"result": 42' in response.content
    assert response.steps[0].kind == "tool" and response.steps[0].result["result"] == 42
    assert audit_records(manager, "tool", name="calculator", outcome="ok", user_id="alice")


async def test_model_cannot_talk_its_way_past_a_denial(managers):
    manager = managers()
    provider = scripted({"tool_calls": [{"name": "web_search", "arguments": {"query": "x"}}]})
    agent = Agent(provider=provider, manager=manager)
    with pytest.raises(PermissionDenied, match="network_access"):
        await agent.arun("search", user_context={"user_id": "alice"})
    assert audit_records(manager, "tool", name="web_search", outcome="denied")


async def test_model_errors_and_limits_go_back_to_the_model(managers):
    manager = managers()
    provider = scripted(
        {"tool_calls": [{"name": "no_such_tool", "arguments": {}}]},
        "```python\nx = bytearray(2 * 1024 ** 3)\n```",
        "```python\nresult = 1\n```",
    )
    agent = Agent(sandbox_type="process", memory_limit=128, provider=provider, manager=manager,
                  max_steps=3)
    response = await agent.arun("go", user_context={"user_id": "alice"})
    assert not response.finished and len(response.steps) == 3
    assert "Unknown tool" in provider.calls[1][-1]["content"]
    assert "memory_mb" in provider.calls[2][-1]["content"]
    assert audit_records(manager, "tool", name="no_such_tool", outcome="unknown")


async def test_run_requires_execute(managers):
    manager = managers()
    agent = Agent(provider=scripted("hello"), manager=manager)
    with pytest.raises(PermissionDenied):
        await agent.arun("hi", user_context={"user_id": "mallory"})
    assert audit_records(manager, "authorization", user_id="mallory", action="agent.run",
                   allowed=False)


def test_policy_defaults_apply(managers):
    manager = managers(Policy(defaults=ResourceLimits(memory_mb=200)))
    asyncio.run(Agent(sandbox_type="restricted", manager=manager).execute_secure("result = 1"))
    assert audit_records(manager, "execution")[-1]["limits"]["memory_mb"] == 200


def test_interpreter_exit_leaves_no_sandbox_process(tmp_path):
    import json
    import subprocess
    import sys

    script = (
        "import asyncio, json, psutil\n"
        "from agenticraft import Agent\n"
        "for kind in ('process', 'restricted'):\n"
        "    asyncio.run(Agent(sandbox_type=kind).execute_secure('result = 1'))\n"
        "print(json.dumps([p.pid for p in psutil.Process().children(recursive=True)]))\n"
    )
    env = {**os.environ, "AGENTICRAFT_AUDIT_LOG": str(tmp_path / "audit.jsonl")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=60, check=True)
    pids = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(pids) >= 2  # a zygote per sandbox type (and pre-forked workers) were running
    for pid in pids:
        assert wait_gone(pid), pid
