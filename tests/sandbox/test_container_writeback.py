"""The container sandbox with a writable working directory (filesystem_access + write): inside the
container each worker builds its private root too, so the bound-in directory is an overlay on the
worker's quota tmpfs and the host's supervisor copies the changes back, as in the process
sandbox: a run's files reach the host when it ends, a run past the total write quota is stopped
with ResourceLimitExceeded naming it and nothing of it reaches the host, a rolled-back session
cell leaves nothing. (Before, the project's seccomp profile denied mount in the container: the
directory was bound read-write, written live and bounded per file only.)"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from agenticraft.security import SecurityContext
from agenticraft.wire.errors import ResourceLimitExceeded

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def writable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    """A started ContainerSandbox whose manager's working directory (owned by the container's
    user when the host runs as root) is not where its audit log lies."""
    import asyncio

    from agenticraft.sandbox import SandboxManager
    from agenticraft.sandbox.container import CONTAINER_UID, ContainerSandbox
    from agenticraft.security.config import Settings
    from agenticraft.security.policy import Policy
    from sandbox.conftest import engine_or_fail

    engine_or_fail().close()
    tmp = tmp_path_factory.mktemp("container-writeback")
    work = tmp / "work"
    work.mkdir()
    tmp.chmod(0o755)
    if os.geteuid() == 0:
        os.chown(work, CONTAINER_UID, CONTAINER_UID)
    manager = SandboxManager(policy=Policy(), settings=Settings(audit_log_path=tmp / "a"),
                             audit_log=tmp / "audit.jsonl", working_dir=work)
    sandbox = ContainerSandbox(manager)
    asyncio.run(sandbox.start())
    yield sandbox, work
    asyncio.run(sandbox.close())


def context(sandbox, **limits) -> SecurityContext:
    limits.setdefault("timeout_seconds", 30)
    return sandbox.manager.authorize(SecurityContext(
        "fs", ["execute", "write"], {"filesystem_access": True, **limits}), "execute")


async def test_a_runs_files_reach_the_host_through_the_overlay(writable):
    sandbox, work = writable
    (work / "old.txt").write_text("host")
    result = await sandbox.execute_code(textwrap.dedent("""
    import os
    seen = open("old.txt").read()
    os.makedirs("out", exist_ok=True)
    open("out/new.txt", "w").write("from the container")
    os.unlink("old.txt")
    vfs = os.statvfs(".")                   # an overlay reports its upper layer's tmpfs
    size_mb = vfs.f_blocks * vfs.f_frsize >> 20
    """), context(sandbox, max_file_size_mb=8))
    assert result.success, result.error
    assert result["seen"] == "host"
    assert result["size_mb"] == 32, result["size_mb"]       # the quota, not the host's disk
    assert (work / "out" / "new.txt").read_text() == "from the container"
    assert not (work / "old.txt").exists()
    assert "quota" in result.enforced["max_file_size_mb"], result.enforced


async def test_the_total_write_quota_stops_a_run_and_nothing_reaches_the_host(writable):
    sandbox, work = writable
    with pytest.raises(ResourceLimitExceeded) as info:
        await sandbox.execute_code(textwrap.dedent("""
        for i in range(8):                      # 8 x 7 MB against 4 x 8 MB
            with open(f"fill-{i}.bin", "wb") as fh:
                for _ in range(7):
                    fh.write(b"x" * (1 << 20))
        """), context(sandbox, max_file_size_mb=8))
    assert info.value.limit == "max_file_size_mb"
    assert "quota of 32 MB" in str(info.value) and "working directory" in str(info.value)
    assert not list(work.glob("fill-*.bin"))


async def test_a_session_copies_kept_cells_and_drops_a_rolled_back_one(writable):
    sandbox, work = writable
    session = sandbox.session(context(sandbox, max_file_size_mb=8))
    try:
        result = await session.run("open('kept.txt', 'w').write('kept')")
        assert result.success, result.error
        assert (work / "kept.txt").read_text() == "kept"
        with pytest.raises(ResourceLimitExceeded) as info:
            await session.run(textwrap.dedent("""
            open("kept.txt", "w").write("changed by a failing cell")
            with open("big.bin", "wb") as fh:
                while True:
                    fh.write(b"x" * (1 << 20))
            """))
        assert info.value.rolled_back
        assert (work / "kept.txt").read_text() == "kept"
        assert not (work / "big.bin").exists()
        view = await session.run("result = open('kept.txt').read()")
        assert view["result"] == "kept"
    finally:
        await session.close()


def test_doctor_says_whether_sessions_renew_the_overlay(writable):
    sandbox, _work = writable
    reports = list(sandbox.doctor().values())
    assert reports
    for report in reports:
        mounts = report["mechanisms"]["mounts"]
        assert mounts["active"] and mounts["overlay"], mounts
        # Docker masks parts of /proc: no fresh /proc, so no PID namespace and no keeper
        assert ("renewed before each session cell" in mounts["detail"]
                or "kept for a whole session" in mounts["detail"]), mounts["detail"]
        assert Path(_work).is_dir()
