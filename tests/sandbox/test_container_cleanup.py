"""Nothing outlives its owner: a closed manager removes its containers, a killed parent's
containers remove themselves (the zygote sees its socket close), and the reaper at start-up
removes what an owner that is gone left behind (containers and host directories)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time

import docker.errors
import pytest

from agenticraft.sandbox import container_engine
from agenticraft.security import SecurityContext
from agenticraft.security.policy import default_container_image

from helpers import make_manager, plain_ulimits

pytestmark = pytest.mark.timeout(120)


def mine(engine, owner: str) -> list:
    return [c for c in container_engine.ours(engine)
            if c.labels.get(container_engine.OWNER_LABEL) == owner]


def wait_destroyed(engine, owner: str, since: float, timeout: float = 30) -> None:
    """Block on the engine's event stream until every container of ``owner`` is destroyed."""
    if not mine(engine, owner):
        return
    events = engine.events(since=int(since), until=int(time.time() + timeout), decode=True,
                           filters={"type": "container", "event": "destroy",
                                    "label": f"{container_engine.OWNER_LABEL}={owner}"})
    for _event in events:
        if not mine(engine, owner):
            break
    assert not mine(engine, owner)


async def test_closing_the_manager_removes_its_containers(tmp_path, engine):
    manager = make_manager(tmp_path)
    sandbox = await manager.get_sandbox("container")
    for memory in (128, 200):  # two profiles: two warm containers
        await sandbox.execute_code("x = 1", SecurityContext(
            "a", resource_limits={"memory_mb": memory}))
    assert len(mine(engine, container_engine.owner_id())) == 2
    hostdirs = [s.zygote.hostdir for s in sandbox.supervisors.values()]
    await manager.close()
    assert not mine(engine, container_engine.owner_id())
    assert not any(os.path.exists(d) for d in hostdirs)


async def test_a_refill_pending_when_the_manager_closes_starts_no_container(tmp_path, engine):
    """A pre-forked worker is replaced in the background after its run; a manager closed
    before that refill ran once got a new container from it, which lived as long as this
    process (seen in a full test run: every later module found it left behind)."""
    manager = make_manager(tmp_path)
    sandbox = await manager.get_sandbox("container")
    ctx = manager.authorize(SecurityContext("a", sandbox_type="container"), "execute")
    supervisor = await sandbox.supervisor_for(ctx)
    handle = await supervisor.spawn(sandbox.profile_for(ctx, supervisor=supervisor),
                                    prefork=True)
    supervisor.release(handle)  # its replacement is made in the background ...
    refills = list(supervisor._refills)
    assert refills
    await manager.close()  # ... and the manager closes before that began
    await asyncio.gather(*refills, return_exceptions=True)
    assert supervisor.zygote.container is None
    assert not mine(engine, container_engine.owner_id())


async def test_a_start_queued_when_the_manager_closes_starts_no_container(tmp_path, engine):
    """Containers start one at a time (a launcher thread). One still queued when its
    manager closed must not start afterwards: it would have no owner left to close it."""
    import threading

    from agenticraft.sandbox.workers import LAUNCHER
    from agenticraft.wire.errors import SandboxError

    manager = make_manager(tmp_path)
    sandbox = await manager.get_sandbox("container")
    ctx = manager.authorize(SecurityContext("a", sandbox_type="container"), "execute")
    busy = threading.Event()
    LAUNCHER.submit(busy.wait)  # (another container's start, say)
    starting = asyncio.ensure_future(sandbox.supervisor_for(ctx))
    while not sandbox.supervisors:  # its start is queued behind the busy launcher
        await asyncio.sleep(0)
    [supervisor] = sandbox.supervisors.values()
    await manager.close()
    busy.set()
    with pytest.raises(SandboxError, match="closed"):
        await starting
    assert supervisor.zygote.container is None
    assert not mine(engine, container_engine.owner_id())


def test_a_killed_parent_leaves_no_container(tmp_path, engine):
    script = (
        "import asyncio, sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from agenticraft.sandbox import container_engine\n"
        "from helpers import make_manager\n"
        "from pathlib import Path\n"
        "async def main():\n"
        "    manager = make_manager(Path(sys.argv[2]))\n"
        "    sandbox = await manager.get_sandbox('container')\n"
        "    await sandbox.execute_code('x = 1', None)\n"
        "    print(container_engine.owner_id(), flush=True)\n"
        "    await asyncio.sleep(600)\n"
        "asyncio.run(main())\n")
    tests_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    started = time.time()
    child = subprocess.Popen([sys.executable, "-c", script, tests_dir, str(tmp_path)],
                             stdout=subprocess.PIPE, text=True)
    try:
        owner = child.stdout.readline().strip()
        assert owner and len(mine(engine, owner)) == 1
    finally:
        child.kill()
        child.wait()
    wait_destroyed(engine, owner, started)


def test_reaper_removes_leftovers_of_dead_owners(engine):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    owner = f"{container_engine._boot_id()}:{dead.stdout.strip()}:1"  # gone (or recycled)
    hostdir = tempfile.mkdtemp(prefix=container_engine.HOSTDIR_PREFIX)
    with open(os.path.join(hostdir, "owner"), "w") as fh:
        fh.write(owner)
    leftover = engine.containers.run(
        default_container_image(), ["python3", "-c", "import time; time.sleep(120)"],
        detach=True, network_mode="none", ulimits=plain_ulimits(engine),
        labels={container_engine.LABEL: "1", container_engine.OWNER_LABEL: owner,
                container_engine.HOSTDIR_LABEL: hostdir})
    alive = engine.containers.run(
        default_container_image(), ["python3", "-c", "import time; time.sleep(120)"],
        detach=True, network_mode="none", auto_remove=True, ulimits=plain_ulimits(engine),
        labels={container_engine.LABEL: "1",
                container_engine.OWNER_LABEL: container_engine.owner_id()})
    try:
        removed = container_engine.reap(engine)
        assert leftover.name in removed and alive.name not in removed
        assert not os.path.exists(hostdir)
        assert [c.name for c in mine(engine, container_engine.owner_id())] == [alive.name]
    finally:
        alive.remove(force=True)
        for container in mine(engine, owner):
            container.remove(force=True)


def test_a_container_removed_while_ours_are_listed_is_left_out(engine, monkeypatch):
    """The engine lists containers, then each is inspected. One removed in between (another
    sandbox closing, its auto-remove) made the listing raise NotFound: a sandbox's start, which
    reaps leftovers, failed with it (and so did this suite's own leftover check, once)."""
    gone = engine.containers.create(
        default_container_image(), ["true"], ulimits=plain_ulimits(engine),
        labels={container_engine.LABEL: "1",
                container_engine.OWNER_LABEL: container_engine.owner_id()})
    from docker.models.containers import ContainerCollection
    get = ContainerCollection.get

    def removed_first(self, container_id, *args, **kwargs):
        if container_id == gone.id:
            gone.remove(force=True)
        return get(self, container_id, *args, **kwargs)

    monkeypatch.setattr(ContainerCollection, "get", removed_first)
    try:
        assert gone.name not in [c.name for c in container_engine.ours(engine)]
        assert container_engine.reap(engine, owners=[container_engine.owner_id()]) == []
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            gone.remove(force=True)


def test_reaper_removes_orphaned_host_directories():
    hostdir = tempfile.mkdtemp(prefix=container_engine.HOSTDIR_PREFIX)
    with open(os.path.join(hostdir, "owner"), "w") as fh:
        fh.write(f"{container_engine._boot_id()}:999999999:1")
    ours = tempfile.mkdtemp(prefix=container_engine.HOSTDIR_PREFIX)
    container_engine.claim_hostdir(ours)
    try:
        removed = container_engine.reap_hostdirs()
        assert hostdir in removed and ours not in removed
        assert not os.path.exists(hostdir) and os.path.exists(ours)
    finally:
        container_engine.remove_hostdir(ours)


async def test_users_get_their_own_container_and_a_dead_one_is_replaced(tmp_path, engine):
    manager = make_manager(tmp_path)
    sandbox = await manager.get_sandbox("container")
    try:
        for user in ("alice", "bob"):
            result = await sandbox.execute_code("import socket\nhost = socket.gethostname()",
                                                SecurityContext(user))
            assert result.success
        names = {s.zygote.container.name for s in sandbox.supervisors.values()}
        assert len(names) == 2  # same limits, different users: two containers
        alice = manager.authorize(SecurityContext("alice"), "execute")
        first = (await sandbox.supervisor_for(alice)).zygote.container
        first.kill()  # the engine (or an OOM) ends it between runs
        with contextlib.suppress(docker.errors.NotFound):  # auto-removed already
            first.wait()
        result = await sandbox.execute_code("x = 2", SecurityContext("alice"))
        assert result["x"] == 2
        assert (await sandbox.supervisor_for(alice)).zygote.container.id != first.id
    finally:
        await manager.close()


def test_an_impostor_on_the_zygote_socket_is_refused(tmp_path):
    """Whoever answers the zygote socket must be the container's user in its pid namespace."""
    import socket as socketlib

    from agenticraft.sandbox.container import ContainerSpec, ContainerZygote
    from agenticraft.wire.errors import SandboxError

    impostor = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_SEQPACKET)

    class FakeContainer:
        status, attrs, name = "running", {"State": {"Pid": 1}}, "fake"

        def reload(self) -> None: ...

        def remove(self, force: bool = False) -> None: ...

    class FakeClient:
        class containers:
            @staticmethod
            def run(command, **kwargs):
                impostor.connect(command[5])  # the socket path the zygote would connect to
                return FakeContainer()

        @staticmethod
        def version():
            return {}

    manager = make_manager(tmp_path)
    ctx = manager.authorize(SecurityContext("a", sandbox_type="container"), "execute")
    zygote = ContainerZygote(FakeClient(), ContainerSpec.for_context(ctx, "img"), frozenset())
    try:
        with pytest.raises(SandboxError, match="outside the container"):
            zygote.start()
    finally:
        impostor.close()
        zygote.close()
