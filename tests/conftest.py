"""Shared fixtures: a process sandbox with its own audit log, started once per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from helpers import make_manager


@pytest.fixture(scope="module")
def process_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """A started ProcessSandbox (the zygote runs for the whole module)."""
    from agenticraft.sandbox.process.sandbox import ProcessSandbox

    tmp = tmp_path_factory.mktemp("process")
    manager = make_manager(tmp)
    sandbox = ProcessSandbox(manager)
    sandbox.supervisor.start()
    sandbox._started = True
    yield sandbox
    sandbox.supervisor.close()
