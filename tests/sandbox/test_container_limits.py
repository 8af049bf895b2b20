"""Every SecurityContext limit hit inside a container, reported like the other sandbox types;
the escape/abuse subset that makes sense for a container (files, network, processes, memory,
disk); sessions that roll back. After each attack the warm container still answers."""

from __future__ import annotations

import textwrap

import pytest

from agenticraft.security import SecurityContext
from agenticraft.wire.errors import ResourceLimitExceeded

from helpers import name_me, wait_named_gone

pytestmark = pytest.mark.timeout(180)


async def run(sandbox, code: str, **limits):
    limits.setdefault("timeout_seconds", 5)
    ctx = SecurityContext("tester", resource_limits=limits)
    return await sandbox.execute_code(textwrap.dedent(code), ctx)


@pytest.fixture(autouse=True)
async def canary(container_sandbox):
    """After every attack: the default profile's container still gives 1+1 = 2."""
    yield
    result = await run(container_sandbox, "result = 1 + 1")
    assert result["result"] == 2


# -- each limit ---------------------------------------------------------------------------------
async def test_timeout(container_sandbox):
    with pytest.raises(ResourceLimitExceeded) as info:
        await run(container_sandbox, "while True: pass", timeout_seconds=1)
    assert info.value.limit == "timeout_seconds"


@pytest.mark.parametrize("code", ["x = bytearray(400 * 2**20)",
                                  "x = []\nwhile True: x.append(bytearray(2**20))"])
async def test_memory(container_sandbox, code):
    with pytest.raises(ResourceLimitExceeded) as info:
        await run(container_sandbox, code, memory_mb=128, timeout_seconds=20)
    assert info.value.limit == "memory_mb"


async def test_max_file_size(container_sandbox):
    with pytest.raises(ResourceLimitExceeded) as info:
        await run(container_sandbox, "open('big', 'wb').write(b'x' * (3 * 2**20))",
                  max_file_size_mb=1)
    assert info.value.limit == "max_file_size_mb"


async def test_max_processes(container_sandbox):
    code = """
    import os, time
    pids = []
    for _ in range(40):
        pid = os.fork()
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        pids.append(pid)
    """
    with pytest.raises((ResourceLimitExceeded, BlockingIOError)) as info:
        result = await run(container_sandbox, code, max_processes=4, timeout_seconds=10)
        assert not result.success and result.error.ename == "BlockingIOError", result
        raise BlockingIOError(result.error.evalue)
    if isinstance(info.value, ResourceLimitExceeded):
        assert info.value.limit == "max_processes"


async def test_max_output_bytes(container_sandbox):
    result = await run(container_sandbox, "print('x' * 100000)", max_output_bytes=1000)
    assert result.truncated and len(result.stdout) < 1500


async def test_cpu_percent_is_the_container_quota(container_sandbox):
    ctx = container_sandbox.manager.authorize(
        SecurityContext("cpu", resource_limits={"cpu_percent": 20}), "execute")
    result = await container_sandbox.run("x = 1", ctx)
    assert "0.2 CPUs" in result.enforced["cpu_percent"]


# -- files --------------------------------------------------------------------------------------
async def test_host_files_are_not_there(container_sandbox, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    result = await run(container_sandbox, f"data = open({str(secret)!r}).read()")
    assert not result.success
    assert result.error.ename in ("FileNotFoundError", "PermissionError")


@pytest.mark.parametrize("path", ["/etc/passwd", "/opt/agenticraft/agenticraft/__init__.py",
                                  "/usr/bin/evil"])
async def test_cannot_write_the_image(container_sandbox, path):
    result = await run(container_sandbox, f"open({path!r}, 'a').write('x')")
    assert not result.success
    assert result.error.ename in ("PermissionError", "OSError")


async def test_cannot_read_shadow(container_sandbox):
    result = await run(container_sandbox, "data = open('/etc/shadow').read()")
    assert not result.success
    assert result.error.ename in ("PermissionError", "FileNotFoundError")


async def test_filesystem_access_mounts_only_the_working_dir(container_sandbox):
    from pathlib import Path
    tmp_path = Path(container_sandbox.manager.working_dir)
    tmp_path.chmod(0o755)  # root's directory: the container user (10001) reads what others may
    (tmp_path / "data.txt").write_text("shared data")
    ctx = container_sandbox.manager.authorize(SecurityContext(
        "fs", ["execute"], {"filesystem_access": True}), "execute")
    result = await container_sandbox.run(
        "import os\ndata = open('data.txt').read()\n"
        "try:\n    open('new.txt', 'w')\nexcept OSError as e:\n    denied = e.errno", ctx)
    assert result["data"] == "shared data"
    assert result["denied"] in (13, 30)  # no write permission: read-only
    assert not (tmp_path / "new.txt").exists()


async def test_the_audit_log_in_the_working_dir_stays_hidden(container_sandbox):
    """The module's manager keeps its audit log in its working directory, which a container with
    filesystem_access (and write) gets bound in: the log must stay unreadable and unwritable."""
    from pathlib import Path
    manager = container_sandbox.manager
    work = Path(manager.working_dir)
    work.chmod(0o755)
    manager.audit.record({"type": "policy", "user_id": "admin", "detail": "kept"})
    log = Path(manager.audit.path)
    assert log.parent == work
    log.chmod(0o666)  # an administrator's choice of mode: hidden from the sandbox whatever it is
    before = log.read_bytes()
    ctx = manager.authorize(SecurityContext(
        "fs", ["execute", "write"], {"filesystem_access": True}), "execute")
    read = await container_sandbox.run(f"data = open({log.name!r}, 'rb').read()", ctx)
    assert not read.success or read["data"] != before
    wrote = await container_sandbox.run(f"open({log.name!r}, 'ab').write(b'forged')", ctx)
    assert not wrote.success
    assert log.read_bytes()[:len(before)] == before and b"forged" not in log.read_bytes()
    assert manager.audit.verify().ok


# -- network ------------------------------------------------------------------------------------
@pytest.mark.parametrize("code", [
    "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=2)",
    "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('8.8.8.8', 53))",
    "import socket\nsocket.getaddrinfo('example.com', 80)",
])
async def test_no_network(container_sandbox, code):
    result = await run(container_sandbox, code)
    assert not result.success
    # refused at once (no route, no resolver): a timeout would mean packets left and were lost
    assert result.error.ename in ("PermissionError", "OSError", "gaierror")


# -- processes ----------------------------------------------------------------------------------
async def test_fork_bomb_is_stopped(container_sandbox):
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    with pytest.raises(ResourceLimitExceeded):
        await run(container_sandbox, code, max_processes=8, timeout_seconds=3)


async def test_cannot_see_or_signal_host_processes(container_sandbox):
    import os
    result = await run(container_sandbox, f"""
    import os, signal
    try:
        os.kill({os.getpid()}, signal.SIGKILL)
        killed = True
    except OSError as e:
        killed = e.errno
    try:
        os.kill(1, signal.SIGKILL)
        init = True
    except OSError as e:
        init = e.errno
    """)
    assert result["killed"] in (1, 3)  # EPERM or ESRCH: the host's pid does not exist here
    assert result["init"] in (1, 3)


async def test_daemon_does_not_outlive_the_run(container_sandbox):
    code = """
    import os, time
    ready, tell = os.pipe()
    child = os.fork()
    if child == 0:
        NAME_ME
        os.write(tell, b"1")
        time.sleep(60)
        os._exit(0)
    os.read(ready, 1)  # the daemon is named before the run ends
    """.replace("NAME_ME", name_me("ctr-daemon").replace("\n", "\n        "))
    result = await run(container_sandbox, code)
    assert result["child"] > 0
    assert wait_named_gone("ctr-daemon")  # killed once its worker ended


# -- disk ---------------------------------------------------------------------------------------
async def test_tmp_is_a_size_limited_tmpfs(container_sandbox):
    """A worker's /tmp is its private tmpfs inside the container: the write quota (4 x
    max_file_size_mb = 64 MB) stops 200 MB of files, each under the per-file limit."""
    code = """
    import os
    err = None
    try:
        for i in range(20):
            with open(f'/tmp/fill-{i}', 'wb') as fh:
                for _ in range(10):
                    fh.write(b'x' * 2**20)
    except OSError as e:
        err = e.errno
    """
    try:
        result = await run(container_sandbox, code, max_file_size_mb=16, timeout_seconds=20)
    except ResourceLimitExceeded as exc:  # ENOSPC at the quota names it
        assert exc.limit == "max_file_size_mb" and "quota of 64 MB" in str(exc)
        return
    assert result.success, result.error
    assert result["err"] == 28, result["err"]  # ENOSPC: 200 MB never fit


# -- sessions -----------------------------------------------------------------------------------
async def test_session_keeps_variables_and_rolls_back(container_sandbox):
    ctx = SecurityContext("sess", resource_limits={"timeout_seconds": 2, "memory_mb": 128})
    session = container_sandbox.session(ctx)
    try:
        await session.run("x = 1\nitems = [1, 2]")
        await session.run("x += 1")
        with pytest.raises(ResourceLimitExceeded) as info:
            await session.run("x = 100\nitems.append(3)\nwhile True: pass")
        assert info.value.rolled_back
        result = await session.run("y = (x, items)")
        assert result["y"] == [2, [1, 2]]
        with pytest.raises(ResourceLimitExceeded) as info:
            await session.run("x = -1\nblob = bytearray(400 * 2**20)")
        assert info.value.rolled_back and info.value.limit == "memory_mb"
        assert (await session.run("z = x"))["z"] == 2
    finally:
        await session.close()


async def test_session_interrupt(container_sandbox):
    import asyncio
    session = container_sandbox.session(SecurityContext("intr"))
    try:
        await session.run("kept = 'yes'")
        looping = asyncio.Event()
        task = asyncio.ensure_future(session.run(
            "print('looping', flush=True)\nwhile True: pass", on_output=lambda _: looping.set()))
        await looping.wait()  # the cell's own code runs: the interrupt reaches it, not start-up
        session.interrupt()
        result = await task
        assert not result.success and result.error.ename == "KeyboardInterrupt"
        assert (await session.run("k = kept"))["k"] == "yes"
    finally:
        await session.close()


async def test_session_undo(container_sandbox):
    """The undo state works in a container as in the process sandbox (the same supervisor)."""
    from agenticraft.wire.errors import NothingToUndo

    session = container_sandbox.session(SecurityContext("undo"), undo=True)
    try:
        await session.run("x = 1\nitems = [1, 2]")
        await session.run("x = 2\nitems.append(3)\ndel items")
        await session.undo()
        with pytest.raises(NothingToUndo, match="already undone"):
            await session.undo()
        assert (await session.run("y = (x, items)"))["y"] == [1, [1, 2]]
    finally:
        await session.close()
