"""Tools: declared needs enforced against the resolved context; user tools run in the sandbox."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from agenticraft import Agent
from agenticraft.agents.tools import (
    FunctionTool,
    ToolRegistry,
    WebSearchBackend,
    WebSearchTool,
    default_registry,
    tool,
)
from agenticraft.agents.tools.runtime import close_manager
from agenticraft.sandbox import SandboxManager
from agenticraft.security.policy import Policy
from agenticraft.wire.errors import ConfigurationError, PermissionDenied

from helpers import audit_records, make_manager
from http_helpers import SEARCH_RESULTS, serve

pytestmark = pytest.mark.usefixtures("isolated_agent_state")


NET = {"user_id": "alice", "resource_limits": {"network_access": True}}
FS = {"user_id": "alice", "resource_limits": {"filesystem_access": True}}
SCALE = 3
NAMES = ["a", "b"]


@pytest.fixture
def manager(tmp_path) -> Iterator[SandboxManager]:
    root = tmp_path / "work"
    root.mkdir()
    m = make_manager(root, Policy())
    yield m
    close_manager(m)


# -- web_search: network needed ---------------------------------------------------------------
async def test_web_search_fails_before_running_without_network(manager, search_server):
    agent = Agent(manager=manager, search_backend=WebSearchBackend(search_server.url))
    with pytest.raises(PermissionDenied, match="network_access") as info:
        await agent.execute_tool_secure("web_search", query="Python security",
                                        user_context={"user_id": "alice"})
    assert info.value.permission == "network_access"
    assert search_server.requests == []
    assert not audit_records(manager, "execution")
    assert audit_records(manager, "tool", name="web_search", outcome="denied", user_id="alice")
    assert audit_records(manager, "authorization", permission="network_access", allowed=False)


async def test_web_search_succeeds_against_loopback_when_allowed(manager, search_server):
    agent = Agent(manager=manager, search_backend=WebSearchBackend(search_server.url))
    result = await agent.execute_tool_secure("web_search", query="Python security",
                                             max_results=1, user_context=NET)
    assert result["result"] == SEARCH_RESULTS[:1]
    assert search_server.requests[0]["path"] == "/search?q=Python+security&n=1"
    execution, = audit_records(manager, "execution", action="tool:web_search")
    assert execution["outcome"] == "ok" and execution["limits"]["network_access"] is True
    assert audit_records(manager, "tool", name="web_search", outcome="ok", user_id="alice")


async def test_network_ceiling_in_the_policy_wins(tmp_path, search_server):
    manager = make_manager(tmp_path, Policy.from_dict({"ceilings": {"network_access": False}}))
    try:
        agent = Agent(manager=manager, search_backend=WebSearchBackend(search_server.url))
        with pytest.raises(PermissionDenied, match="ceiling network_access=False"):
            await agent.execute_tool_secure("web_search", query="x", user_context=NET)
        assert search_server.requests == []
    finally:
        close_manager(manager)


async def test_web_search_without_backend_is_a_configuration_error(manager, monkeypatch):
    monkeypatch.delenv("AGENTICRAFT_SEARCH_URL", raising=False)
    agent = Agent(manager=manager)
    with pytest.raises(ConfigurationError, match="AGENTICRAFT_SEARCH_URL"):
        await agent.execute_tool_secure("web_search", query="x", user_context=NET)
    assert audit_records(manager, "tool", name="web_search", outcome="invalid")


async def test_backend_results_are_normalised(manager):
    def other_api(method, path, body):
        return 200, [{"title": "T", "link": "http://x", "content": "C", "extra": 1}, "junk"]

    with serve(other_api) as server:
        tool_ = WebSearchTool(WebSearchBackend(server.url, path="/api", query_param="query",
                                               count_param=None))
        agent = Agent(manager=manager, tools=[tool_])
        result = await agent.execute_tool_secure("web_search", query="z", user_context=NET)
    assert result["result"] == [{"title": "T", "url": "http://x", "snippet": "C"}]
    assert server.requests[0]["path"] == "/api?query=z"


# -- tools that do not declare network get none -------------------------------------------------
def fetch(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=3) as response:
        return response.read().decode()


async def test_tool_without_network_need_runs_offline_even_if_context_allows(manager,
                                                                            search_server):
    agent = Agent(manager=manager, tools=[fetch])
    result = await agent.execute_tool_secure("fetch", url=search_server.url + "/search?q=a",
                                             user_context=NET)
    assert not result.success and result.error.ename in ("URLError", "PermissionError")
    assert search_server.requests == []
    agent.register_tool(FunctionTool(fetch, name="fetch_net", network=True))
    ok = await agent.execute_tool_secure("fetch_net", url=search_server.url + "/search?q=a",
                                         user_context=NET)
    assert json.loads(ok["result"])["results"] == SEARCH_RESULTS[:5]


# -- read_file: filesystem needed, confined -----------------------------------------------------
async def test_read_file_needs_filesystem_access(manager):
    (Path(manager.working_dir) / "notes.txt").write_text("hello notes")
    agent = Agent(manager=manager)
    with pytest.raises(PermissionDenied, match="filesystem_access"):
        await agent.execute_tool_secure("read_file", path="notes.txt",
                                        user_context={"user_id": "alice"})
    assert not audit_records(manager, "execution")
    result = await agent.execute_tool_secure("read_file", path="notes.txt", user_context=FS)
    assert result["result"] == "hello notes" and result["truncated"] is False
    assert audit_records(manager, "tool", name="read_file", outcome="ok")
    short = await agent.execute_tool_secure("read_file", path="notes.txt", max_bytes=5,
                                            user_context=FS)
    assert (short["result"], short["truncated"]) == ("hello", True)


@pytest.mark.parametrize("path", ["/etc/passwd", "../outside.txt", "link.txt"])
async def test_read_file_stays_under_the_working_directory(manager, path):
    work = Path(manager.working_dir)
    (work.parent / "outside.txt").write_text("secret")
    (work / "link.txt").symlink_to(work.parent / "outside.txt")
    agent = Agent(manager=manager)
    with pytest.raises(PermissionDenied, match="outside it"):
        await agent.execute_tool_secure("read_file", path=path, user_context=FS)
    assert audit_records(manager, "tool", name="read_file", outcome="denied")
    assert not audit_records(manager, "execution")


async def test_landlock_confines_reads_inside_the_sandbox_too(manager):
    outside = Path(manager.working_dir).parent / "outside.txt"
    outside.write_text("secret")
    agent = Agent(manager=manager)
    result = await agent.execute_tool_secure(
        "python", code=f"result = open({str(outside)!r}).read()", user_context=FS)
    assert not result.success and result.error.ename in ("PermissionError", "FileNotFoundError")


# -- calculator and python ----------------------------------------------------------------------
async def test_calculator_runs_arithmetic_in_the_restricted_sandbox(manager):
    agent = Agent(manager=manager)
    result = await agent.execute_tool_secure("calculator", expression="(2 + 3) * max(4, 7) / 2")
    assert result["result"] == 17.5 and result.sandbox_type == "restricted"
    commented = await agent.execute_tool_secure("calculator", expression="1 + 1  # )")
    assert commented["result"] == 2


@pytest.mark.parametrize("expression", [
    "__import__('os').getpid()", "open('/etc/passwd')", "x", "1; 2", "'a' * 3",
    "(1).__class__", "[i for i in range(3)]", "max(1, key=abs)",
])
async def test_calculator_refuses_anything_but_arithmetic(manager, expression):
    with pytest.raises(ConfigurationError, match="calculator"):
        await Agent(manager=manager).execute_tool_secure("calculator", expression=expression)
    assert audit_records(manager, "tool", name="calculator", outcome="invalid")
    assert not audit_records(manager, "execution")


async def test_python_tool_runs_in_the_process_sandbox(manager):
    result = await Agent(manager=manager).execute_tool_secure(
        "python", code="import os\nresult = os.getpid()\nprint('x')")
    assert result.sandbox_type == "process" and result["result"] != os.getpid()
    assert result.stdout == "x\n"


# -- user tools: plain functions, run in the sandbox --------------------------------------------
def where_am_i(tag: str, times: int = 2) -> dict:
    """Report the process this runs in."""
    import os

    return {"pid": os.getpid(), "tag": tag * times, "root": math.sqrt(16) * SCALE,
            "names": NAMES}


async def test_user_function_runs_in_the_sandbox_not_the_host(manager):
    agent = Agent(manager=manager)
    registered = agent.register_tool(where_am_i)
    assert registered.description == "Report the process this runs in."
    result = await agent.execute_tool_secure("where_am_i", tag="ab",
                                             user_context={"user_id": "alice"})
    value = result["result"]
    assert value["pid"] != os.getpid() and value["tag"] == "abab"
    assert value["root"] == 12.0 and value["names"] == ["a", "b"]  # module import + constants
    assert list(result) == ["result"]
    assert audit_records(manager, "tool", name="where_am_i", outcome="ok", user_id="alice")
    assert audit_records(manager, "execution", action="tool:where_am_i")[0]["sandbox_type"] == \
        "process"


@tool(name="shout")
def make_loud(text: str) -> str:
    return text.upper() + "!"


async def test_decorated_tool_and_errors_in_tools(manager):
    agent = Agent(manager=manager, tools=[make_loud])
    assert (await agent.execute_tool_secure("shout", text="hi"))["result"] == "HI!"
    with pytest.raises(ConfigurationError, match="lambda"):
        agent.register_tool(lambda: 1)
    failing = FunctionTool(_module_broken)
    agent.register_tool(failing)
    result = await agent.execute_tool_secure("_module_broken")
    assert not result.success and result.error.ename == "RuntimeError"
    assert audit_records(manager, "tool", name="_module_broken", outcome="error")


def _module_broken() -> None:
    raise RuntimeError("tool failed")


def test_unsendable_functions_are_refused():
    captured = 5

    def closure() -> int:
        return captured

    with pytest.raises(ConfigurationError, match="closure over captured"):
        FunctionTool(closure)
    with pytest.raises(ConfigurationError, match="lambda"):
        FunctionTool(lambda: 1)
    with pytest.raises(ConfigurationError, match="plain Python functions"):
        FunctionTool(len)
    with pytest.raises(ConfigurationError, match="global 'Path'"):
        FunctionTool(_uses_a_class)

    async def coroutine() -> None:
        pass

    with pytest.raises(ConfigurationError, match="coroutine"):
        FunctionTool(coroutine)


def _uses_a_class() -> str:
    return str(Path("."))


async def test_arguments_are_validated_on_the_host(manager):
    agent = Agent(manager=manager, tools=[where_am_i])
    with pytest.raises(ConfigurationError, match="unexpected keyword"):
        await agent.execute_tool_secure("where_am_i", tag="a", bogus=1)
    with pytest.raises(ConfigurationError, match="JSON data"):
        await agent.execute_tool_secure("where_am_i", tag=object())
    with pytest.raises(ConfigurationError, match="must be string"):
        await agent.execute_tool_secure("calculator", expression=3)
    with pytest.raises(ConfigurationError, match="unknown argument"):
        await agent.execute_tool_secure("calculator", expression="1", extra=2)
    assert not audit_records(manager, "execution")


async def test_tool_extra_permissions_are_required(tmp_path):
    manager = make_manager(tmp_path, Policy.from_dict({"grants": {"default": ["execute"]}}))
    try:
        agent = Agent(manager=manager)
        agent.register_tool(FunctionTool(_module_broken, name="writer", permissions=["write"]))
        with pytest.raises(PermissionDenied, match="'write' permission"):
            await agent.execute_tool_secure("writer", user_context={"user_id": "alice"})
        assert audit_records(manager, "authorization", permission="write", allowed=False)
        assert not audit_records(manager, "execution")
    finally:
        close_manager(manager)


async def test_unknown_tool_is_audited(manager):
    with pytest.raises(ConfigurationError, match="registered tools: calculator"):
        await Agent(manager=manager).execute_tool_secure("nope", user_context={"user_id": "x"})
    assert audit_records(manager, "tool", name="nope", outcome="unknown", user_id="x")


async def test_tool_sandbox_type_cannot_be_overridden(manager):
    with pytest.raises(ConfigurationError, match="runs in the 'restricted' sandbox"):
        await Agent(manager=manager).execute_tool_secure(
            "calculator", expression="1", user_context={"user_id": "a",
                                                        "sandbox_type": "process"})


# -- the registry -------------------------------------------------------------------------------
def test_registry_basics():
    registry = default_registry()
    assert registry.names() == ["calculator", "python", "read_file", "web_search"]
    assert registry.get("web_search").needs == {"permissions": ["execute"], "network": True,
                                                "filesystem": False, "sandbox_type": "process"}
    assert registry.get("read_file").needs["filesystem"] is True
    with pytest.raises(ConfigurationError, match="already registered"):
        registry.register(where_am_i, name="calculator")
    registry.register(where_am_i)
    schema = registry.get("where_am_i").schema()["function"]
    assert schema["parameters"]["required"] == ["tag"]
    assert schema["parameters"]["properties"]["times"]["type"] == "integer"
    copy = registry.copy()
    copy.unregister("where_am_i")
    assert "where_am_i" in registry and "where_am_i" not in copy
    assert len(ToolRegistry([make_loud])) == 1
