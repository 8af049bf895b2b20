"""The container sandbox's fixtures: one started ContainerSandbox per test module (its warm
containers live for the module), and a check that no test leaves a container behind.

These tests need a running container engine and the default image (scripts/test.sh starts
dockerd and builds the image); without them they fail, saying so, rather than skip."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from helpers import make_manager


def engine_or_fail():
    from agenticraft.sandbox import container_engine
    from agenticraft.wire.errors import SandboxUnavailable

    try:
        return container_engine.connect()
    except SandboxUnavailable as exc:
        pytest.fail(f"{exc} (scripts/test.sh starts dockerd and builds the image)")


@pytest.fixture(scope="module")
def container_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """A started ContainerSandbox with its own manager and audit log."""
    from agenticraft.sandbox.container import ContainerSandbox

    engine_or_fail().close()
    manager = make_manager(tmp_path_factory.mktemp("container"))
    sandbox = ContainerSandbox(manager)
    asyncio.run(sandbox.start())
    yield sandbox
    asyncio.run(sandbox.close())


@pytest.fixture(scope="module")
def engine() -> Iterator:
    client = engine_or_fail()
    yield client
    client.close()


def our_containers(client) -> list:
    from agenticraft.sandbox.container_engine import ours
    return ours(client)


@pytest.fixture(autouse=True, scope="module")
def no_container_left_behind() -> Iterator[None]:
    """After each module (its fixtures closed): no container of this test process remains."""
    yield
    from agenticraft.sandbox import container_engine
    from agenticraft.wire.errors import SandboxUnavailable
    try:
        client = container_engine.connect()
    except SandboxUnavailable:
        return  # no engine this user can reach: nothing can be left
    try:
        mine = [c.name for c in container_engine.ours(client)
                if c.labels.get(container_engine.OWNER_LABEL) == container_engine.owner_id()]
    finally:
        client.close()
    assert not mine, f"containers left behind: {mine}"
