"""Shared fixtures: isolated agent state, a process sandbox with its own audit log (started once
per test module), and the loopback HTTP servers of ``http_helpers``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import make_manager
from http_helpers import LoopbackServer, arithmetic_chat, search_handler, serve


@pytest.fixture
def isolated_agent_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Agents, tools and workflows share a default manager: give each test its own, with its
    audit log under tmp_path, so no test touches the real audit log or another test's state."""
    from agenticraft.agents.tools import close_default_manager, set_default_manager

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("AGENTICRAFT_AUDIT_LOG", str(tmp_path / "state" / "audit.jsonl"))
    previous = set_default_manager(None)
    yield
    close_default_manager()
    set_default_manager(previous)


@pytest.fixture(scope="module")
def process_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """A started ProcessSandbox (the zygote runs for the whole module)."""
    from agenticraft.sandbox.process import ProcessSandbox

    tmp = tmp_path_factory.mktemp("process")
    manager = make_manager(tmp)
    sandbox = ProcessSandbox(manager)
    sandbox.supervisor.start()
    sandbox._started = True
    yield sandbox
    sandbox.supervisor.close()


@pytest.fixture
def search_server() -> Iterator[LoopbackServer]:
    """A loopback search API answering ``SEARCH_RESULTS``."""
    with serve(search_handler) as server:
        yield server


@pytest.fixture
def chat_server() -> Iterator[LoopbackServer]:
    """A loopback OpenAI-compatible chat endpoint that asks the sandbox to compute 2 + 2."""
    with serve(arithmetic_chat) as server:
        yield server
