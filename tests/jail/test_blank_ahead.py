"""Issue 11: a blank child prepared ahead (in its namespaces, its PID namespace's init and worker
forked before any profile exists) must confine exactly as a fresh fork does.

Each case spawns the same profile twice, once from a prepared blank and once as a fresh fork,
runs the same attack in both and compares: what the sandbox can reach (the other profile's
working directory, a host unix socket, a host TCP port, the init's root, other processes) and
what it reports. Two profiles with different working directories take turns on blanks, so
nothing one of them gets may show up in the other. A profile with the host's network does not
fit a blank (no network namespace at all) and must take a fresh fork.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from agenticraft.security import SecurityContext

from helpers import make_manager, tcp_listener, wait_gone

pytestmark = pytest.mark.timeout(180)

ATTACK = """
import os, socket
def attempt(f):
    try:
        f()
        return "reached"
    except OSError as exc:
        return type(exc).__name__
def read(path):
    with open(path) as fh:
        return fh.read()
def tcp():
    socket.create_connection(("127.0.0.1", PORT), timeout=2).close()
def unix():
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(2)
    s.connect(SOCK)
mine = read(MINE)
other = attempt(lambda: read(OTHER))
host_unix = attempt(unix)
host_tcp = attempt(tcp)
init_root = attempt(lambda: os.listdir("/proc/1/root"))
init_cwd = attempt(lambda: os.listdir("/proc/1/cwd"))
processes = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
hostname = socket.gethostname()
home = os.environ["HOME"]
mounts = sorted(line.split()[1].replace(home, "HOME") for line in open("/proc/self/mounts"))
"""


class Spawner:
    def __init__(self, sandbox: Any, root: Path) -> None:
        self.sandbox, self.root = sandbox, root
        self.supervisor = sandbox.supervisor
        self.handles: list[Any] = []
        self.backstops: list[int] = []  # each attacked worker's address-space backstop, MB
        self.limits = self.context(root).resource_limits

    def context(self, work: Path) -> Any:
        ctx = SecurityContext("tester", ["execute"],
                              {"filesystem_access": True, "timeout_seconds": 10},
                              working_dir=str(work))
        return self.sandbox.manager.authorize(ctx, "execute")

    def profile(self, work: Path, **changes: Any) -> dict[str, Any]:
        return {**self.sandbox.profile_for(self.context(work)), **changes}

    def descendants(self) -> set[int]:
        return {p.pid for p in psutil.Process(self.supervisor.zygote.pid).children(
            recursive=True)}

    def wait_prepared_blank(self) -> None:
        """Until the zygote holds a child with its init and worker (keeper -> init -> worker)
        that no handle owns: a blank prepared ahead (the zygote refills it after a spawn)."""
        deadline = time.monotonic() + 20
        owned = {p for h in self.handles for p in (h.keeper, h.init, h.pid)}
        while time.monotonic() < deadline:
            for child in psutil.Process(self.supervisor.zygote.pid).children():
                if child.pid not in owned and len(child.children(recursive=True)) == 2:
                    return
            time.sleep(0.01)
        raise AssertionError("no blank prepared ahead appeared")

    async def spawn(self, profile: dict[str, Any], *, pool: bool) -> tuple[Any, bool]:
        """A worker and whether it existed before the request (a prepared blank)."""
        if pool:
            self.wait_prepared_blank()
        before = self.descendants()
        handle = await self.supervisor.spawn(profile, prefork=False, pool=pool)
        self.handles.append(handle)
        return handle, handle.pid in before

    def close(self) -> None:
        for handle in self.handles:
            self.supervisor.discard(handle)


@pytest.fixture
async def spawner(tmp_path: Path) -> AsyncIterator[Spawner]:
    from agenticraft.sandbox.process import ProcessSandbox

    sandbox = ProcessSandbox(make_manager(tmp_path))
    await sandbox.start()
    made = Spawner(sandbox, tmp_path)
    yield made
    made.close()
    await sandbox.close()


def ahead(spawner: Spawner) -> bool:
    from agenticraft.jail.confine.apply import ahead_possible
    return ahead_possible(spawner.supervisor.zygote.mechanisms)


def comparable(applied: dict[str, Any]) -> dict[str, Any]:
    """The worker's report without what differs between any two workers (unit name, pids,
    whether the unit was joined ahead)."""
    out = {**applied}
    if "cgroups" in out:
        out["cgroups"] = {k: v for k, v in out["cgroups"].items()
                          if k not in ("unit", "pre_joined")}
    out.pop("pid_namespace", None)
    if "rlimits" in out:  # the address-space backstop counts from the worker's own mapped
        out["rlimits"] = {k: v for k, v in out["rlimits"].items()  # size: checked apart
                          if k != "address_space_mb"}
    return out


def differ(a: tuple[dict[str, Any], ...], b: tuple[dict[str, Any], ...]) -> list[Any]:
    return [(k, x.get(k), y.get(k)) for x, y in zip(a, b, strict=True)
            for k in sorted({*x, *y}) if x.get(k) != y.get(k)]


def ns_of(pid: int) -> dict[str, str]:
    return {n: os.readlink(f"/proc/{pid}/ns/{n}") for n in ("user", "ipc", "uts", "net", "mnt",
                                                             "pid_for_children")}


def cap_eff(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1], 16) for line in fh if line.startswith("CapEff:"))


def check_layout(handle: Any, prepared: bool) -> None:
    """The init (pid 1) lives in the worker's root and namespaces, without capabilities, and
    the worker's pid and namespaces are its own; checked from the host where it may look
    (a non-dumpable process's root and namespaces need root). A prepared worker is ready only
    once its init dropped its capabilities; a fresh fork's init drops them right after it
    forked the worker, so it may still hold them for a moment."""
    assert cap_eff(handle.pid) == 0
    deadline = time.monotonic() + (0 if prepared else 5)
    while cap_eff(handle.init) != 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cap_eff(handle.init) == 0, "prepared" if prepared else "fresh"
    if os.geteuid() != 0:
        return
    init_root, worker_root = os.stat(f"/proc/{handle.init}/root"), os.stat(
        f"/proc/{handle.pid}/root")
    assert (init_root.st_dev, init_root.st_ino) == (worker_root.st_dev, worker_root.st_ino)
    host_root = os.stat("/")
    assert (init_root.st_dev, init_root.st_ino) != (host_root.st_dev, host_root.st_ino)
    init_ns, worker_ns = ns_of(handle.init), ns_of(handle.pid)
    assert {k: v for k, v in init_ns.items() if k != "pid_for_children"} == {
        k: v for k, v in worker_ns.items() if k != "pid_for_children"}
    keeper_ns = ns_of(handle.keeper)
    assert keeper_ns["pid_for_children"] == worker_ns["pid_for_children"]
    assert keeper_ns["user"] == worker_ns["user"]
    own = ns_of(os.getpid())
    for name in ("user", "ipc", "uts", "mnt", "pid_for_children"):
        assert worker_ns[name] != own[name], name


async def attack(spawner: Spawner, profile: dict[str, Any], pool: bool, mine: Path,
                 other: Path, sock: str, port: int) -> tuple[dict[str, Any], dict[str, Any], bool]:
    handle, prepared = await spawner.spawn(profile, pool=pool)
    assert handle.keeper is not None and handle.init is not None, "no PID namespace here"
    check_layout(handle, prepared)
    code = ATTACK.replace("PORT", str(port)).replace("SOCK", repr(sock)).replace(
        "MINE", repr(str(mine))).replace("OTHER", repr(str(other)))
    outcome = await spawner.supervisor.run(handle, code, spawner.limits)
    assert outcome.frame["ok"], outcome.frame
    spawner.supervisor.discard(handle)
    values = {k: v for k, v in outcome.frame["values"].items() if k != "home"}  # per worker
    spawner.backstops.append(handle.ready["applied"].get("rlimits", {}).get("address_space_mb", 0))
    return values, comparable(handle.ready["applied"]), prepared


async def test_a_prepared_blank_isolates_two_profiles_as_a_fresh_fork_does(spawner: Spawner):
    if not ahead(spawner):
        pytest.fail("this host cannot prepare blanks ahead (no user/mount/PID namespaces)")
    root = spawner.root
    works = {name: root / name for name in ("alpha", "beta")}
    for name, work in works.items():
        work.mkdir()
        (work / "secret.txt").write_text(f"secret of {name}")
    sock_path = str(root / "host.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(sock_path)
    server.listen(4)
    try:
        with tcp_listener() as (_listener, port):
            seen: dict[tuple[str, bool], tuple[dict[str, Any], dict[str, Any]]] = {}
            # alternating, so a blank serves alpha right after beta and the other way round
            for name, pool in (("alpha", True), ("beta", True), ("alpha", False),
                               ("beta", False), ("alpha", True), ("beta", True)):
                other = works["beta" if name == "alpha" else "alpha"]
                values, applied, prepared = await attack(
                    spawner, spawner.profile(works[name]), pool, works[name] / "secret.txt",
                    other / "secret.txt", sock_path, port)
                assert prepared is pool, "a blank prepared ahead served it" if pool else \
                    "a fresh fork served it"
                assert values["mine"] == f"secret of {name}"
                for reach in ("other", "host_unix", "host_tcp", "init_root", "init_cwd"):
                    assert values[reach] != "reached", (name, pool, reach, values[reach])
                assert values["processes"] == [1, 2]  # its init and itself, nothing else
                assert values["hostname"] == "sandbox"
                assert not any(str(other) in m for m in values["mounts"])
                if (name, pool) in seen:  # the second blank for the profile: the same again
                    assert seen[(name, pool)] == (values, applied), differ(
                        seen[(name, pool)], (values, applied))
                seen[(name, pool)] = (values, applied)
            for name in works:
                assert seen[(name, True)] == seen[(name, False)], differ(
                    seen[(name, True)], seen[(name, False)])
            # the backstop is the worker's mapped size plus a fixed allowance: a blank's may
            # differ from a fresh fork's by the odd megabyte of heap, never by more
            assert max(spawner.backstops) - min(spawner.backstops) <= 16, spawner.backstops
    finally:
        server.close()


async def test_a_profile_with_the_host_network_takes_a_fresh_fork(spawner: Spawner):
    """No network namespace at all is what it gets, as from a fresh fork; a prepared blank
    (its own network namespace) is left for the next profile that fits."""
    work = spawner.root / "net"
    work.mkdir()
    profile = spawner.profile(work, network_access=True)
    spawner.wait_prepared_blank()
    handle, prepared = await spawner.spawn(profile, pool=True)
    assert not prepared
    assert handle.ready["applied"]["namespaces"]["network_namespace"] is False
    if os.geteuid() == 0:
        assert ns_of(handle.pid)["net"] == os.readlink("/proc/self/ns/net")
    blank = await spawner.supervisor.spawn(spawner.profile(work), prefork=False)
    spawner.handles.append(blank)
    assert blank.ready["applied"]["namespaces"]["network_namespace"] is True


async def test_a_blank_that_waited_is_confined_and_dies_with_its_zygote(spawner: Spawner):
    """A blank prepared ahead that waited (here 1 s) still gets a working, confined sandbox in
    its own session; a blank left waiting dies with the zygote (parent-death signals)."""
    if not ahead(spawner):
        pytest.fail("this host cannot prepare blanks ahead (no user/mount/PID namespaces)")
    work = spawner.root / "wait"
    work.mkdir()
    spawner.wait_prepared_blank()
    await asyncio.sleep(1.0)  # the point of the test: it waited
    handle, prepared = await spawner.spawn(spawner.profile(work), pool=True)
    assert prepared
    assert os.getsid(handle.keeper) == handle.keeper  # its own session, led by the keeper
    outcome = await spawner.supervisor.run(handle, "x = 6 * 7", spawner.limits)
    assert outcome.frame["values"] == {"x": 42}
    spawner.wait_prepared_blank()  # the next one, waiting for a profile
    everything = spawner.descendants()
    assert len(everything) >= 6  # the handle's three and the blank's three
    os.kill(spawner.supervisor.zygote.pid, signal.SIGKILL)
    for pid in everything:
        assert wait_gone(pid), pid


async def test_a_blank_holds_the_limits_of_its_profile_not_of_the_last_one(spawner: Spawner):
    """A prepared blank writes the last profile's limits on its unit while it waits; a profile
    with other limits must get its own before anything runs (and the same ones again when
    they match)."""
    from agenticraft.jail.confine import cgroups
    from agenticraft.jail.confine.apply import unit_layout, unit_limits

    layout = unit_layout(spawner.supervisor.zygote.mechanisms)  # None: no unit, no limits
    work = spawner.root / "limits"
    work.mkdir()
    first = spawner.profile(work)
    second = {**first, "memory_mb": first["memory_mb"] // 2, "cpu_percent": 25.0,
              "max_processes": first["max_processes"] - 3}
    for profile in (first, second, second):
        handle, prepared = await spawner.spawn(profile, pool=True)
        assert prepared is ahead(spawner)
        writes = [] if layout is None else cgroups.limit_writes(
            layout.version, layout.caps, **unit_limits(profile, 2))
        for controller, name, value in writes:
            assert (handle.unit._read(controller, name) or "").strip() == value, (
                name, profile is first)
        spawner.supervisor.discard(handle)


async def test_the_blanks_shared_plan_is_unmapped_before_the_sandbox_runs(spawner: Spawner):
    """The mapping in which blanks pass on what pages to copy is shared by every child of the
    zygote: no sandbox may hold it (it would be a channel between sandboxes)."""
    work = spawner.root / "maps"
    work.mkdir()
    code = ("shared = [l for l in open('/proc/self/maps') if l.split()[1][3] == 's' "
            "and 'zero' in l]")
    for pool in (True, False, True):
        handle, _prepared = await spawner.spawn(spawner.profile(work), pool=pool)
        outcome = await spawner.supervisor.run(handle, code, spawner.limits)
        assert outcome.frame["values"] == {"shared": []}, pool
        spawner.supervisor.discard(handle)
