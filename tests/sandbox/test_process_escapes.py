"""Escape and abuse attempts against the process sandbox: each one is really run and must be
blocked or stopped; the supervisor and the zygote survive, and a canary run right after works."""

from __future__ import annotations

import os
import textwrap

import psutil
import pytest

from agenticraft.security import SecurityContext
from agenticraft.wire.errors import ResourceLimitExceeded

from helpers import name_me, tcp_listener, wait_named_gone, wait_path_gone

pytestmark = pytest.mark.timeout(120)
#: How a refused read looks: Landlock says EACCES; in the private root the file does not exist.
HIDDEN = ("PermissionError", "FileNotFoundError")


async def run(sandbox, code: str, **limits):
    limits.setdefault("timeout_seconds", 5)
    ctx = SecurityContext("tester", resource_limits=limits)
    return await sandbox.execute_code(textwrap.dedent(code), ctx)


@pytest.fixture(autouse=True)
async def canary(process_sandbox):
    """After every attack: the zygote is alive and `1+1` still gives 2."""
    zygote_pid = process_sandbox.supervisor.zygote.pid
    yield
    assert psutil.Process(zygote_pid).is_running()
    result = await run(process_sandbox, "result = 1 + 1")
    assert result["result"] == 2


# -- reading what is not ours ------------------------------------------------------------------
async def test_cannot_read_etc_shadow(process_sandbox):
    result = await run(process_sandbox, "data = open('/etc/shadow').read()")
    assert not result.success
    assert result.error.ename in HIDDEN
    assert "data" not in result


async def test_cannot_read_home_or_other_files(process_sandbox, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    for path in (secret, os.path.expanduser("~")):
        result = await run(process_sandbox, f"import os\ndata = open({str(path)!r}).read() "
                                            f"if os.path.isfile({str(path)!r}) "
                                            f"else os.listdir({str(path)!r})")
        assert not result.success, path
        assert result.error.ename in HIDDEN
        assert "TOP-SECRET" not in result.stdout


async def test_cannot_read_parent_environ(process_sandbox, monkeypatch):
    monkeypatch.setenv("AGENTICRAFT_TEST_SECRET", "s3cr3t-token")
    for pid in (os.getpid(), process_sandbox.supervisor.zygote.pid, 1):
        result = await run(process_sandbox, f"data = open('/proc/{pid}/environ', 'rb').read()")
        assert not result.success
        # FileNotFoundError: a host process does not exist in the sandbox's PID namespace.
        assert result.error.ename in ("PermissionError", "FileNotFoundError")


async def test_environment_is_scrubbed(process_sandbox, monkeypatch):
    result = await run(process_sandbox, "import os\nenv = dict(os.environ)")
    assert set(result["env"]) <= {"PATH", "LANG", "LC_ALL", "TZ", "HOME", "TMPDIR",
                                  "PYTHONDONTWRITEBYTECODE"}


async def test_cannot_read_connection_file_inside_working_dir(tmp_path, monkeypatch):
    """filesystem_access=True opens the working directory, but never the runtime dir in it."""
    from agenticraft.sandbox.process import ProcessSandbox

    from helpers import make_manager

    runtime = tmp_path / "runtime"
    runtime.mkdir()
    (runtime / "kernel-1.json").write_text('{"key": "hmac-secret"}')
    (tmp_path / "data.txt").write_text("shared data")
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime))
    sandbox = ProcessSandbox(make_manager(tmp_path))
    await sandbox.start()
    try:
        ctx = SecurityContext("tester", ["execute"], {"filesystem_access": True,
                                                     "timeout_seconds": 5},
                              working_dir=str(tmp_path))
        ok = await sandbox.execute_code(f"data = open({str(tmp_path / 'data.txt')!r}).read()",
                                        ctx)
        assert ok["data"] == "shared data"
        denied = await sandbox.execute_code(
            f"data = open({str(runtime / 'kernel-1.json')!r}).read()", ctx)
        assert denied.error.ename in HIDDEN
        no_write = await sandbox.execute_code(
            f"open({str(tmp_path / 'new.txt')!r}, 'w').write('x')", ctx)
        assert no_write.error.ename in ("PermissionError", "OSError")  # no 'write' permission
        assert not (tmp_path / "new.txt").exists()
    finally:
        await sandbox.close()


# -- writing outside the scratch directory ----------------------------------------------------
@pytest.mark.parametrize("code", [
    "open('/tmp/escape-{tag}', 'w').write('x')",
    "open('../escape-{tag}', 'w').write('x')",
    "import os\nos.symlink('/tmp/escape-{tag}', 'link')\nopen('link', 'w').write('x')",
    "import os\nos.link('/etc/hostname', 'hard-{tag}')",
])
async def test_cannot_write_outside_scratch(process_sandbox, code):
    tag = f"{os.getpid()}-{abs(hash(code))}"
    result = await run(process_sandbox, code.format(tag=tag))
    if process_sandbox.supervisor.mechanisms["mounts"]["active"]:
        # /tmp is the sandbox's own tmpfs: a write there may succeed, but never on the host
        assert result.success or result.error.ename in (*HIDDEN, "OSError")
    else:
        assert not result.success
        assert result.error.ename in ("PermissionError", "OSError")
    assert not os.path.exists(f"/tmp/escape-{tag}")


async def test_scratch_is_private_and_removed(process_sandbox):
    result = await run(process_sandbox, "import os\nopen('f.txt', 'w').write('x')\n"
                                        "where = os.getcwd()")
    assert result.success
    # The run's sandbox ends with it; its zygote removes the (host) directory once it has
    # reaped the sandbox (off the caller's path), and it never outlives that.
    assert wait_path_gone(result["where"], timeout=5)


# -- network ------------------------------------------------------------------------------------
@pytest.mark.parametrize("code", [
    "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_STREAM)",
    "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM)",
    "import socket\nsocket.socket(socket.AF_INET6, socket.SOCK_STREAM)",
    "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)",
    "import socket\nsocket.socket(socket.AF_PACKET, socket.SOCK_RAW)",
    "import socket\nsocket.getaddrinfo('pypi.org', 443)",
])
async def test_no_network(process_sandbox, code):
    result = await run(process_sandbox, code)
    assert not result.success
    assert result.error.ename in ("PermissionError", "gaierror", "OSError")


async def test_no_tcp_to_loopback_listener(process_sandbox):
    with tcp_listener() as (listener, port):
        result = await run(process_sandbox, f"import socket\n"
                                            f"socket.create_connection(('127.0.0.1', {port}))")
        assert not result.success
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()


# -- the supervisor ---------------------------------------------------------------------------
async def test_cannot_signal_or_ptrace_the_supervisor(process_sandbox):
    me = os.getpid()
    zygote = process_sandbox.supervisor.zygote.pid
    code = f"""
    import ctypes, os, signal
    outcomes = []
    for pid in ({me}, {zygote}):
        for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGSTOP):
            try:
                os.kill(pid, sig)
                outcomes.append('sent')
            except PermissionError:
                outcomes.append('denied')
            except ProcessLookupError:  # not even visible: the sandbox's own PID namespace
                outcomes.append('absent')
        libc = ctypes.CDLL(None, use_errno=True)
        outcomes.append(libc.ptrace(16, pid, 0, 0))  # PTRACE_ATTACH
    """
    result = await run(process_sandbox, code)
    assert [o if o != "absent" else "denied" for o in result["outcomes"]] == [
        "denied", "denied", "denied", -1] * 2
    assert psutil.Process(me).status() != psutil.STATUS_STOPPED


async def test_cannot_raise_rlimits_back(process_sandbox):
    code = """
    import resource
    denied = []
    for which in (resource.RLIMIT_AS, resource.RLIMIT_FSIZE, resource.RLIMIT_NPROC):
        try:
            resource.setrlimit(which, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        except (ValueError, PermissionError, OSError):
            denied.append(which)
    """
    result = await run(process_sandbox, code)
    assert len(result["denied"]) == 3


# -- resource abuse -------------------------------------------------------------------------------
async def test_fork_bomb_is_stopped(process_sandbox):
    code = """
    import os
    while True:
        try:
            os.fork()
        except OSError:
            pass
    """
    with pytest.raises(ResourceLimitExceeded) as info:
        await run(process_sandbox, code, timeout_seconds=3, max_processes=16)
    assert info.value.limit in ("timeout_seconds", "max_processes")


async def test_thread_bomb_is_stopped(process_sandbox):
    code = """
    import threading, time
    threads = []
    while True:
        t = threading.Thread(target=time.sleep, args=(60,))
        t.start()
        threads.append(t)
    """
    result_or_limit = None
    try:
        result_or_limit = await run(process_sandbox, code, timeout_seconds=3, max_processes=16)
    except ResourceLimitExceeded as exc:
        result_or_limit = exc
    if isinstance(result_or_limit, ResourceLimitExceeded):
        assert result_or_limit.limit in ("max_processes", "memory_mb", "timeout_seconds")
    else:  # the kernel refused the thread: an error result, not a hang
        assert result_or_limit.error.ename in ("RuntimeError", "MemoryError", "OSError")


@pytest.mark.parametrize("code", [
    "x = bytearray(2 * 1024 ** 3)",
    "chunks = []\nwhile True:\n    chunks.append(bytearray(10 * 1024 ** 2))",
    "import mmap\nm = mmap.mmap(-1, 2 * 1024 ** 3)\nm.write(b'x' * (1024 ** 3))",
])
async def test_memory_bomb_is_stopped(process_sandbox, code):
    with pytest.raises(ResourceLimitExceeded) as info:
        await run(process_sandbox, code, memory_mb=128)
    assert info.value.limit == "memory_mb"


async def test_huge_power_is_stopped_by_timeout(process_sandbox):
    with pytest.raises(ResourceLimitExceeded) as info:
        await run(process_sandbox, "x = 10 ** 10 ** 10", timeout_seconds=1)
    assert info.value.limit in ("timeout_seconds", "memory_mb")


async def test_print_flood_is_cut(process_sandbox):
    code = "for _ in range(1_000_000):\n    print('x' * 1000)"
    try:
        result = await run(process_sandbox, code, timeout_seconds=20,
                           max_output_bytes=100_000)
        stdout = result.stdout
        assert result.truncated
    except ResourceLimitExceeded as exc:  # slow machine: the timeout came first
        assert exc.limit == "timeout_seconds"
        stdout = exc.stdout
    assert len(stdout.encode()) < 100_000 + 200
    assert "output truncated" in stdout


async def test_two_gigabyte_file_is_refused(process_sandbox):
    code = """
    with open('big.bin', 'wb') as fh:
        for _ in range(2048):
            fh.write(b'0' * (1024 * 1024))
    """
    with pytest.raises(ResourceLimitExceeded) as info:
        await run(process_sandbox, code, max_file_size_mb=10)
    assert info.value.limit == "max_file_size_mb"


async def test_daemon_does_not_outlive_the_timeout(process_sandbox):
    code = """
    import os, sys, time
    if os.fork() == 0:
        if os.fork() == 0:
            {name_me}
            print('daemon', flush=True)
            while True:
                time.sleep(0.1)
        os._exit(0)
    while True:
        pass
    """.replace("{name_me}", name_me("acs-daemon-t").replace("\n", "; ").strip("; "))
    with pytest.raises(ResourceLimitExceeded) as info:
        await run(process_sandbox, code, timeout_seconds=1)
    assert "daemon" in info.value.stdout
    assert wait_named_gone("acs-daemon-t")


async def test_daemon_does_not_outlive_a_finished_run(process_sandbox):
    code = """
    import os, time
    r, w = os.pipe()
    if os.fork() == 0:
        if os.fork() == 0:
            {name_me}
            os.write(w, b"x")
            while True:
                time.sleep(0.1)
        os._exit(0)
    os.wait()
    daemon = os.read(r, 32)
    """.replace("{name_me}", name_me("acs-daemon-f").replace("\n", "; ").strip("; "))
    result = await run(process_sandbox, code)
    assert result.success, result.error
    assert wait_named_gone("acs-daemon-f")


async def test_thread_that_keeps_running_is_stopped(process_sandbox):
    code = name_me("acs-spinner") + (
        "import threading\n"
        "def spin():\n    while True:\n        pass\n"
        "threading.Thread(target=spin).start()\n")
    result = await run(process_sandbox, code)
    assert result.success, result.error
    assert wait_named_gone("acs-spinner")


async def test_ignoring_signals_does_not_help(process_sandbox):
    code = """
    import signal
    for sig in (signal.SIGTERM, signal.SIGALRM, signal.SIGINT, signal.SIGXCPU):
        signal.signal(sig, signal.SIG_IGN)
    while True:
        pass
    """
    with pytest.raises(ResourceLimitExceeded) as info:
        await run(process_sandbox, code, timeout_seconds=1)
    assert info.value.limit == "timeout_seconds"


async def test_cannot_create_namespaces_or_new_session(process_sandbox):
    code = """
    import ctypes, os
    libc = ctypes.CDLL(None, use_errno=True)
    results = [libc.unshare(0x10000000), libc.unshare(0x40000000)]
    try:
        os.setsid()
        results.append('setsid ok')
    except PermissionError:
        results.append('setsid denied')
    """
    result = await run(process_sandbox, code)
    assert result["results"] == [-1, -1, "setsid denied"]


# -- bad input ------------------------------------------------------------------------------------
async def test_syntax_error_is_a_clean_result(process_sandbox):
    result = await run(process_sandbox, "def broken(:\n    pass")
    assert not result.success
    assert result.error.ename == "SyntaxError"


async def test_system_exit_is_a_result(process_sandbox):
    result = await run(process_sandbox, "raise SystemExit(3)")
    assert result.error.ename == "SystemExit"


async def test_segfault_is_a_clean_result(process_sandbox):
    result = await run(process_sandbox, "import ctypes\nctypes.string_at(0)")
    assert not result.success
    assert result.error.ename == "WorkerExited"


async def test_garbage_on_the_channel_is_contained(process_sandbox):
    from agenticraft.wire.errors import SandboxError

    code = "import os\nos.write(3, b'\\xff' * 64)\nimport time\ntime.sleep(5)"
    with pytest.raises(SandboxError) as info:
        await run(process_sandbox, code)
    assert "control channel" in str(info.value)


async def test_forged_result_only_fools_itself(process_sandbox):
    code = """
    import json, os, struct
    body = json.dumps({"ev": "done", "run": -1, "ok": True, "values": {"forged": True}}).encode()
    os.write(3, struct.pack('!I', len(body)) + body)
    result = 'real'
    """
    result = await run(process_sandbox, code)
    assert result["result"] == "real"
    assert "forged" not in result


async def test_garbage_to_stdout_fds(process_sandbox):
    result = await run(process_sandbox, "import os\nos.write(1, bytes(range(256)))\nx = 1")
    assert result["x"] == 1
