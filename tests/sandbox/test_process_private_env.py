"""Issue 11: the weaknesses of confinement v1, each tried for real against the process sandbox.

Each test attacks what the host's own view of the machine used to expose (host unix sockets,
SysV IPC, files inside the working directory, the host application's directory, disk, inotify,
leftovers of a killed kernel). Run as root and again unprivileged (scripts/test-unprivileged.sh).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from agenticraft.jail.confine.mounts import PTY_MAX
from agenticraft.security import SecurityContext
from agenticraft.security.policy import Policy
from agenticraft.wire.errors import ResourceLimitExceeded

from helpers import make_manager

pytestmark = pytest.mark.timeout(180)
#: Weaknesses of confinement v1 not fixed yet on this branch (strict: a fix must remove it).
V1 = pytest.mark.xfail(strict=True, reason="issue 11: confinement v1 weakness")
_libc = ctypes.CDLL(None, use_errno=True)


async def run(sandbox, code: str, ctx: SecurityContext | None = None, **limits):
    limits.setdefault("timeout_seconds", 10)
    ctx = ctx or SecurityContext("tester", resource_limits=limits)
    return await sandbox.execute_code(textwrap.dedent(code), ctx)


@pytest.fixture(autouse=True)
async def canary(process_sandbox):
    """After every attack: the zygote is alive and `1+1` still gives 2."""
    zygote_pid = process_sandbox.supervisor.zygote.pid
    yield
    assert psutil.Process(zygote_pid).is_running()
    result = await run(process_sandbox, "result = 1 + 1")
    assert result["result"] == 2


@pytest.fixture
async def fs_sandbox(tmp_path):
    """A sandbox whose working directory is ``tmp_path/work`` (files next to a notebook)."""
    from agenticraft.sandbox.process import ProcessSandbox

    work = tmp_path / "work"
    work.mkdir()
    sandbox = ProcessSandbox(make_manager(work))
    await sandbox.start()
    yield sandbox, work
    await sandbox.close()


@pytest.fixture(params=["under /tmp", "outside /tmp"])
async def fs_sandbox_anywhere(request, tmp_path):
    """As ``fs_sandbox``, with the working directory under /tmp (the sandbox's own /tmp is
    granted as a whole) and outside it (/var/tmp: granted only as the working directory, as a
    notebook's directory in a home is)."""
    from agenticraft.sandbox.process import ProcessSandbox

    if request.param == "under /tmp":
        work = tmp_path / "work"
        work.mkdir()
    else:
        work = Path(tempfile.mkdtemp(prefix="acs-work-", dir="/var/tmp"))
    sandbox = ProcessSandbox(make_manager(work))
    await sandbox.start()
    yield sandbox, work
    await sandbox.close()
    if request.param != "under /tmp":
        shutil.rmtree(work, ignore_errors=True)


def fs_context(work: Path, *, write: bool = False, **limits) -> SecurityContext:
    limits.setdefault("timeout_seconds", 10)
    return SecurityContext("tester", ["execute", *(["write"] if write else [])],
                           {"filesystem_access": True, **limits}, working_dir=str(work))


# -- host unix sockets ---------------------------------------------------------------------------
class UnixServer:
    """A listening AF_UNIX server that answers PWNED to whoever connects (a tmux-like target)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.connections = 0
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        os.chmod(path, 0o777)
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            try:
                conn.sendall(b"PWNED")
            finally:
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self.thread.join()
        self.sock.close()
        os.unlink(self.path)


def runtime_like_dir() -> str:
    """A /run/user-like directory: /run/user/<uid> when it exists, else one made under /run
    (root) or /dev/shm (a user without a runtime directory)."""
    base = f"/run/user/{os.getuid()}"
    for candidate in (base, "/run", "/dev/shm"):
        if os.path.isdir(candidate) and os.access(candidate, os.W_OK):
            return tempfile.mkdtemp(prefix="acs-sock-", dir=candidate)
    pytest.skip("no writable /run-like directory")


@pytest.fixture(params=["tmp", "run"])
def unix_server(request, tmp_path_factory):
    where = (str(tmp_path_factory.mktemp("sock")) if request.param == "tmp"
             else runtime_like_dir())
    server = UnixServer(os.path.join(where, "server.sock"))
    yield server
    server.close()
    if request.param == "run":
        os.rmdir(where)


CONNECT = """
import socket
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(2)
s.connect({path!r})
got = s.recv(16)
"""


async def test_host_unix_socket_unreachable_without_filesystem_access(process_sandbox,
                                                                      unix_server):
    result = await run(process_sandbox, CONNECT.format(path=unix_server.path))
    assert not result.success
    assert result.error.ename in ("FileNotFoundError", "PermissionError", "ConnectionRefusedError")
    assert unix_server.connections == 0


async def test_host_unix_socket_unreachable_with_filesystem_access(fs_sandbox, unix_server):
    sandbox, work = fs_sandbox
    for write in (False, True):
        result = await sandbox.execute_code(CONNECT.format(path=unix_server.path),
                                            fs_context(work, write=write))
        assert not result.success, write
        assert unix_server.connections == 0


# -- SysV IPC ------------------------------------------------------------------------------------
IPC_PRIVATE, IPC_CREAT, IPC_RMID = 0, 0o1000, 0
_libc.shmat.restype = ctypes.c_void_p


def sysv_ids(kind: str) -> set[int]:
    """Identifiers of the SysV objects (shm, msg, sem) this process's IPC namespace holds."""
    with open(f"/proc/sysvipc/{kind}") as fh:
        lines = fh.read().splitlines()[1:]
    column = 1
    return {int(line.split()[column]) for line in lines if line.split()}


async def test_host_sysv_shared_memory_is_invisible(process_sandbox):
    shmid = _libc.shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0o600)
    assert shmid >= 0
    try:
        addr = _libc.shmat(shmid, None, 0)
        ctypes.memmove(addr, b"HOST-SHM-SECRET", 15)
        _libc.shmdt(ctypes.c_void_p(addr))
        result = await run(process_sandbox, f"""
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            libc.shmat.restype = ctypes.c_void_p
            addr = libc.shmat({shmid}, None, 0o10000)  # SHM_RDONLY
            seen = b"" if addr in (None, ctypes.c_void_p(-1).value) else ctypes.string_at(addr, 15)
            try:
                listed = open('/proc/sysvipc/shm').read()
            except OSError:
                listed = ""
            """)
        assert result.success, result.error
        assert result["seen"] != b"HOST-SHM-SECRET"
        assert str(shmid) not in result["listed"].split()
    finally:
        _libc.shmctl(shmid, IPC_RMID, None)


async def test_host_sysv_message_queue_is_unreachable(process_sandbox):
    qid = _libc.msgget(IPC_PRIVATE, IPC_CREAT | 0o600)
    assert qid >= 0
    try:
        result = await run(process_sandbox, f"""
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            buf = ctypes.create_string_buffer(b"\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00hello", 13)
            sent = libc.msgsnd({qid}, buf, 5, 0o4000)  # IPC_NOWAIT
            """)
        assert result.success, result.error
        assert result["sent"] == -1
        buf = ctypes.create_string_buffer(64)
        assert _libc.msgrcv(qid, buf, 56, 0, 0o4000) == -1  # nothing arrived
    finally:
        _libc.msgctl(qid, IPC_RMID, None)


async def test_sysv_objects_do_not_outlive_the_sandbox(process_sandbox):
    before = {kind: sysv_ids(kind) for kind in ("shm", "msg", "sem")}
    await run(process_sandbox, """
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        made = [libc.semget(0, 250, 0o1600) for _ in range(20)]
        made += [libc.msgget(0, 0o1600) for _ in range(5)]
        made += [libc.shmget(0, 1 << 20, 0o1600) for _ in range(5)]
        """)
    after = {kind: sysv_ids(kind) for kind in ("shm", "msg", "sem")}
    leaked = {kind: after[kind] - before[kind] for kind in after}
    for kind, ctl in (("shm", _libc.shmctl), ("msg", _libc.msgctl), ("sem", _libc.semctl)):
        for ident in leaked[kind]:  # clean up what confinement v1 leaves, then fail
            ctl(ident, IPC_RMID, 0) if kind == "sem" else ctl(ident, IPC_RMID, None)
    assert not any(leaked.values()), leaked


# -- files of the host inside the working directory ------------------------------------------------
async def test_audit_log_policy_and_config_in_working_dir_are_hidden(tmp_path, monkeypatch):
    from agenticraft.sandbox import SandboxManager
    from agenticraft.sandbox.process import ProcessSandbox
    from agenticraft.security.config import Settings

    work = tmp_path / "work"
    work.mkdir()
    policy_file = work / "policy.toml"
    policy_file.write_text("[ceilings]\nmemory_mb = 1024\n")
    config_file = work / "config.py"
    config_file.write_text("SECURITY_CONFIG = {}\n")
    monkeypatch.setenv("AGENTICRAFT_CONFIG", str(config_file))
    audit = work / "audit.jsonl"
    manager = SandboxManager(policy=Policy.from_file(policy_file),
                             settings=Settings(audit_log_path=audit), audit_log=audit,
                             working_dir=work)
    manager.audit.record({"type": "policy", "user_id": "admin", "detail": "first"})
    (work / "data.csv").write_text("a,b\n1,2\n")
    sandbox = ProcessSandbox(manager)
    await sandbox.start()
    try:
        ctx = fs_context(work, write=True)
        ok = await sandbox.execute_code("data = open('data.csv').read()", ctx)
        assert ok["data"] == "a,b\n1,2\n"
        for path in (audit, manager.audit.head_path, policy_file, config_file):
            assert path.exists()
            before = path.read_bytes()
            read = await sandbox.execute_code(f"data = open({str(path)!r}, 'rb').read()", ctx)
            assert not read.success or read["data"] != before, path
            wrote = await sandbox.execute_code(
                f"open({str(path)!r}, 'wb').write(b'forged')", ctx)
            assert not wrote.success, path
            removed = await sandbox.execute_code(f"import os\nos.unlink({str(path)!r})", ctx)
            assert not removed.success, path
            assert path.exists(), path
            if path in (policy_file, config_file):
                assert path.read_bytes() == before, path
        report = manager.audit.verify()
        assert report.ok, str(report)
    finally:
        await sandbox.close()


def reading(path: str) -> str:
    """A cell that puts ``path``'s text in ``data``, or the name of the error that refused it."""
    return (f"try:\n    data = open({path!r}).read()\n"
            "except OSError as exc:\n    data = type(exc).__name__")


def a_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home for this test, with a notes.txt (HOME points at it, no JUPYTER_RUNTIME_DIR): a
    notebook server started in it serves it as the working directory."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (home / "notes.txt").write_text("hello")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("JUPYTER_RUNTIME_DIR", raising=False)
    return home


def host_python_in(work: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A site-packages of the host's own Python inside ``work`` (a venv next to notebooks)."""
    from agenticraft.sandbox import profile

    site = work / "venv" / "lib" / "python3" / "site-packages"
    site.mkdir(parents=True)
    code_paths = profile.host_code_paths
    monkeypatch.setattr(profile, "host_code_paths", lambda: (*code_paths(), str(site)))
    return site


@contextlib.asynccontextmanager
async def cells(sandbox, ctx: SecurityContext, session: bool):
    """``cell(code)``: one-shot runs of ``ctx``, or the runs of one session of it (closed after)."""
    runner = sandbox.session(ctx) if session else None

    async def cell(code: str):
        return await (runner.run(code) if runner else sandbox.execute_code(code, ctx))

    try:
        yield cell
    finally:
        if runner is not None:
            await runner.close()


async def test_an_audit_log_first_written_after_the_sandbox_started_is_hidden_too(tmp_path):
    """The audit log configured inside the working directory does not exist yet when the first
    worker is confined (its first record comes after the first run); the workers confined
    ahead of time for the next runs must not read it once it does."""
    from agenticraft.sandbox import SandboxManager
    from agenticraft.sandbox.process import ProcessSandbox
    from agenticraft.security.config import Settings

    work = tmp_path / "work"
    work.mkdir()
    audit = work / "logs" / "audit.jsonl"
    manager = SandboxManager(policy=Policy(), settings=Settings(audit_log_path=audit),
                             audit_log=audit, working_dir=work)
    sandbox = ProcessSandbox(manager)
    await sandbox.start()
    try:
        for write in (False, True, False):
            ctx = fs_context(work, write=write)
            seen = await sandbox.execute_code(reading("logs/audit.jsonl"), ctx)
            assert seen.success, seen.error
            assert "code_sha256" not in seen["data"], seen["data"]
            assert audit.exists()
        assert manager.audit.verify().ok
    finally:
        await sandbox.close()
        await manager.close()


@pytest.mark.parametrize("write", [False, True], ids=["read-only", "writable"])
async def test_secrets_made_in_a_home_working_directory_during_a_session_stay_hidden(
        tmp_path, monkeypatch, write):
    """Jupyter runs in the home directory and, while a notebook's session runs, the user makes
    ~/.aws with ``aws configure`` (or ~/.ssh with ssh-keygen): the session never reads them."""
    from agenticraft.sandbox.process import ProcessSandbox

    home = a_home(tmp_path, monkeypatch)
    sandbox = ProcessSandbox(make_manager(home))
    await sandbox.start()
    session = sandbox.session(fs_context(home, write=write))
    try:
        assert (await session.run("data = open('notes.txt').read()"))["data"] == "hello"
        for secret in (".ssh/id_rsa", ".aws/credentials", ".gnupg/private.key",
                       ".kube/config", ".config/gcloud/credentials.db",
                       ".local/share/jupyter/runtime/kernel-2.json"):
            (home / secret).parent.mkdir(parents=True, exist_ok=True)
            (home / secret).write_text("SECRET")
            seen = await session.run(reading(secret))
            assert seen.success, seen.error
            assert seen["data"] != "SECRET", secret
            assert (home / secret).read_text() == "SECRET"
    finally:
        await session.close()
        await sandbox.close()


@pytest.mark.parametrize("session", [False, True], ids=["one-shot", "session"])
async def test_the_hosts_python_in_a_writable_working_directory_stays_read_only(
        tmp_path, monkeypatch, session):
    """A writable working directory that holds the host's own Python (a venv next to the
    notebooks, user site-packages in a home, this checkout): a ``.pth`` file written there runs
    in the host's next Python, outside any sandbox. It is read-only inside, says why, and is
    never copied back; the rest of the directory stays writable."""
    from agenticraft.sandbox.process import ProcessSandbox

    work = tmp_path / "work"
    site = host_python_in(work, monkeypatch)
    (site / "mine.py").write_text("X = 1\n")
    sandbox = ProcessSandbox(make_manager(work))
    await sandbox.start()
    evil = "venv/lib/python3/site-packages/evil.pth"
    try:
        async with cells(sandbox, fs_context(work, write=True), session) as cell:
            for attempt in range(2 if session else 1):  # a session's 2nd try: after a renewal
                wrote = await cell(f"open('notes{attempt}.txt', 'w').write('mine')")
                assert wrote.success, wrote.error
                forged = await cell(f"open({evil!r}, 'w').write('import os')")
                assert not forged.success
                assert "host's own Python" in str(forged.error), forged.error
                read = await cell(f"data = open({str(site / 'mine.py')!r}).read()")
                assert read.success and read["data"] == "X = 1\n", read.error
                assert (work / f"notes{attempt}.txt").read_text() == "mine"
                assert not (site / "evil.pth").exists()
    finally:
        await sandbox.close()


@pytest.mark.parametrize("session", [False, True], ids=["one-shot", "session"])
async def test_code_written_where_the_host_imports_from_never_reaches_the_host(
        tmp_path, monkeypatch, session):
    """An agent host started as ``python /srv/app/server.py`` from ``/srv/app`` imports from
    its working directory first: a ``json.py`` (or ``json/__init__.py``, or bytecode in
    ``__pycache__``) a cell writes there runs in the host's next start, before the standard
    library, outside any sandbox. Data files are still copied back; Python code is neither
    copied, replaced nor deleted on the host, and the cell's stderr says why."""
    from agenticraft.sandbox import profile
    from agenticraft.sandbox.process import ProcessSandbox

    app = tmp_path / "app"
    (app / "pkg").mkdir(parents=True)
    (app / "server.py").write_text("SERVED = True\n")
    (app / "pkg" / "__init__.py").write_text("")
    (app / "pkg" / "notes.txt").write_text("old")
    code_paths = profile.host_code_paths
    monkeypatch.setattr(profile, "host_code_paths", lambda: (*code_paths(), str(app)))
    sandbox = ProcessSandbox(make_manager(app))
    await sandbox.start()
    code = textwrap.dedent("""\
        import os, shutil
        open('result.csv', 'w').write('a,b')
        open('json.py', 'w').write('import os')
        os.mkdir('yaml'); open('yaml/__init__.py', 'w').write('import os')
        open('yaml/data.txt', 'w').write('kept')
        os.makedirs('__pycache__', exist_ok=True)
        open('__pycache__/server.cpython-311.pyc', 'wb').write(b'forged')
        open('site.pth', 'w').write('import os')
        open('server.py', 'w').write('SERVED = False')
        shutil.rmtree('pkg')
        seen = sorted(os.listdir('.'))
    """)
    try:
        async with cells(sandbox, fs_context(app, write=True), session) as cell:
            result = await cell(code)
            assert result.success, result.error
            assert "json.py" in result["seen"]  # the cell's own view has all it wrote
            assert (app / "result.csv").read_text() == "a,b"
            assert (app / "yaml" / "data.txt").read_text() == "kept"
            for written in ("json.py", "yaml/__init__.py", "__pycache__/server.cpython-311.pyc",
                            "site.pth"):
                assert not (app / written).exists(), written
            assert (app / "server.py").read_text() == "SERVED = True\n"
            assert (app / "pkg" / "__init__.py").exists()  # the rest of pkg went: it was data
            assert not (app / "pkg" / "notes.txt").exists()
            assert "the host imports from this directory" in result.stderr, result.stderr
            if session:  # the next cell sees the host's directory again
                again = await cell("import os\nseen = sorted(os.listdir('.'))\n"
                                   "served = open('server.py').read()")
                assert again.success, again.error
                assert "json.py" not in again["seen"] and again["served"] == "SERVED = True\n"
    finally:
        await sandbox.close()


async def test_without_a_private_root_the_hosts_python_is_never_writable(tmp_path, monkeypatch):
    """Without a mount namespace nothing can keep a directory inside a writable one read-only
    (Landlock only adds rights): write access to a working directory holding the host's Python
    is refused, saying why and what to do; reading it still works."""
    from agenticraft.sandbox.process import ProcessSandbox
    from agenticraft.wire.errors import SandboxUnavailable

    work = tmp_path / "work"
    site = host_python_in(work, monkeypatch)
    monkeypatch.setenv("AGENTICRAFT_DISABLE", "mounts")
    sandbox = ProcessSandbox(make_manager(work))
    try:
        with pytest.raises(SandboxUnavailable, match="holds the host's own Python"):
            await sandbox.execute_code(f"open({str(site / 'evil.pth')!r}, 'w')",
                                       fs_context(work, write=True))
        assert not (site / "evil.pth").exists()
        read = await sandbox.execute_code("import os\nseen = os.listdir('venv')",
                                          fs_context(work))
        assert read.success and read["seen"] == ["lib"], read.error
    finally:
        await sandbox.close()


async def test_what_a_home_runs_unasked_is_never_written_from_a_writable_home(
        tmp_path, monkeypatch):
    """Write permission on a working directory that holds the home: a cell must not plant what
    the user's own programs run without being asked (a shell's start-up file, an IPython
    start-up script, a kernelspec, git's configuration), whether the file exists or not."""
    from agenticraft.sandbox.process import ProcessSandbox

    home = a_home(tmp_path, monkeypatch)
    (home / ".bashrc").write_text("export TOKEN=secret\n")
    sandbox = ProcessSandbox(make_manager(home))
    await sandbox.start()
    session = sandbox.session(fs_context(home, write=True))
    planted = (".bashrc", ".bash_profile", ".ipython/profile_default/startup/00-evil.py",
               ".local/share/jupyter/kernels/python3/kernel.json", ".gitconfig",
               ".config/autostart/evil.desktop")
    try:
        seen = await session.run("data = open('.bashrc').read()")
        assert not seen.success or "TOKEN" not in seen["data"]
        for path in planted:
            await session.run(f"import os\nos.makedirs(os.path.dirname({path!r}) or '.', "
                              f"exist_ok=True)\nopen({path!r}, 'a').write('evil')")
        kept = await session.run("open('notes.txt', 'w').write('mine')")  # next cell: copied
        assert kept.success, kept.error
        assert (home / "notes.txt").read_text() == "mine"
        assert (home / ".bashrc").read_text() == "export TOKEN=secret\n"
        for path in planted[1:]:
            assert not (home / path).exists(), path
    finally:
        await session.close()
        await sandbox.close()


async def test_host_script_directory_is_not_readable(tmp_path, monkeypatch):
    """A host app started as ``python /srv/app/server.py`` has /srv/app on sys.path; its .env
    must not be readable from a sandbox (filesystem_access off)."""
    from agenticraft.sandbox import profile
    from agenticraft.sandbox.process import ProcessSandbox

    app = tmp_path / "app"
    app.mkdir()
    (app / ".env").write_text("API_KEY=host-secret")
    monkeypatch.syspath_prepend(str(app))
    profile.python_paths.cache_clear()
    sandbox = ProcessSandbox(make_manager(tmp_path))
    await sandbox.start()
    try:
        result = await run(sandbox, f"data = open({str(app / '.env')!r}).read()")
        assert not result.success
        assert result.error.ename in ("PermissionError", "FileNotFoundError")
    finally:
        await sandbox.close()
        profile.python_paths.cache_clear()


# -- disk ---------------------------------------------------------------------------------------
FILL = """
import os
written = 0
for i in range(300):                      # up to 300 x 15 MB = 4.4 GB
    with open(os.path.join({where}, f"fill-{{i}}.bin"), "wb") as fh:
        for _ in range(15):
            fh.write(b"x" * (1 << 20))
    written += 15 << 20
"""


async def test_working_directory_writes_are_bounded_in_total(fs_sandbox):
    sandbox, work = fs_sandbox
    try:
        with pytest.raises(ResourceLimitExceeded) as info:
            await sandbox.execute_code(FILL.format(where="os.getcwd()"),
                                       fs_context(work, write=True, max_file_size_mb=16,
                                                  timeout_seconds=60))
        assert info.value.limit == "max_file_size_mb"
        assert "quota" in str(info.value) and "working directory" in str(info.value)
        # A run ended by a limit is not copied back: the host directory got nothing at all.
        assert not list(work.glob("fill-*.bin"))
    finally:
        for p in work.glob("fill-*.bin"):
            p.unlink()


# -- the working directory's copy-back (an overlay on the quota tmpfs) ---------------------------
async def test_working_directory_unlinked_open_files_count(fs_sandbox):
    sandbox, work = fs_sandbox
    with pytest.raises(ResourceLimitExceeded) as info:
        await sandbox.execute_code(textwrap.dedent("""
        import os
        held = []
        for i in range(40):                   # 40 x 10 MB = 400 MB against a 40 MB quota
            fh = open(f"held-{i}.bin", "wb")
            os.unlink(f"held-{i}.bin")        # gone by name, still open
            for _ in range(10):
                fh.write(b"x" * (1 << 20))
            fh.flush()
            held.append(fh)
        """), fs_context(work, write=True, max_file_size_mb=10, timeout_seconds=30))
    assert info.value.limit == "max_file_size_mb" and "quota" in str(info.value)


async def test_sparse_files_reach_the_host_without_their_holes_filled(fs_sandbox):
    """A sparse file takes almost no room on the quota tmpfs: 40 files of 7 MB with 3 bytes
    of data each (280 MB against a 32 MB quota) pass the quota, so copy-back must keep their
    holes, or the host would get 280 MB written out for a few kilobytes."""
    sandbox, work = fs_sandbox
    result = await sandbox.execute_code(textwrap.dedent("""
    for i in range(40):
        with open(f"sparse-{i}.bin", "wb") as fh:
            fh.seek(7 * 1024 * 1024)
            fh.write(b"end")
    """), fs_context(work, write=True, max_file_size_mb=8, timeout_seconds=30))
    assert result.success, result.error
    files = sorted(work.glob("sparse-*.bin"))
    assert len(files) == 40
    assert all(f.stat().st_size == 7 * 1024 * 1024 + 3 for f in files)
    with open(files[0], "rb") as fh:
        fh.seek(7 * 1024 * 1024 - 2)
        assert fh.read() == b"\0\0end"
    on_disk = sum(f.stat().st_blocks * 512 for f in files)
    assert on_disk < 32 * 1024 * 1024, f"{on_disk >> 20} MB written to the host"


def host_tree(root: Path) -> dict[str, str]:
    """Every entry below ``root``: file contents, "<dir>" or "-> target" for symlinks."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if rel.startswith("audit.jsonl"):  # the manager's own audit log (make_manager)
            continue
        if path.is_symlink():
            found[rel] = "-> " + os.readlink(path)
        elif path.is_dir():
            found[rel] = "<dir>"
        else:
            found[rel] = path.read_text()
    return found


async def test_working_directory_changes_reach_the_host_after_the_run(fs_sandbox):
    sandbox, work = fs_sandbox
    (work / "keep.txt").write_text("host keep")
    (work / "modify.txt").write_text("host old")
    (work / "delete.txt").write_text("host delete")
    (work / "rename-me.txt").write_text("moved")
    (work / "tree" / "sub").mkdir(parents=True)
    (work / "tree" / "sub" / "leaf.txt").write_text("leaf")
    (work / "data").mkdir()
    (work / "data" / "old.csv").write_text("a,b")
    result = await sandbox.execute_code(textwrap.dedent("""
    import os, shutil
    seen = open("keep.txt").read() + "|" + open(os.path.abspath("tree/sub/leaf.txt")).read()
    open("modify.txt", "w").write("sandbox new")
    os.unlink("delete.txt")
    os.rename("rename-me.txt", "renamed.txt")
    shutil.rmtree("tree")
    os.makedirs("new/deep")
    open("new/deep/made.txt", "w").write("made")
    shutil.rmtree("data")
    os.mkdir("data")                          # a host directory replaced: opaque in the overlay
    open("data/new.csv", "w").write("c,d")
    os.chmod("new/deep/made.txt", 0o640)
    result = seen
    """), fs_context(work, write=True))
    assert result.success, result.error
    assert result["result"] == "host keep|leaf"     # reads of the host's files still work
    assert host_tree(work) == {
        "data": "<dir>", "data/new.csv": "c,d", "keep.txt": "host keep",
        "modify.txt": "sandbox new", "new": "<dir>", "new/deep": "<dir>",
        "new/deep/made.txt": "made", "renamed.txt": "moved"}
    assert (work / "new/deep/made.txt").stat().st_mode & 0o777 == 0o640


async def test_renaming_a_host_directory_says_why_and_shutil_move_works(fs_sandbox):
    sandbox, work = fs_sandbox
    (work / "old").mkdir()
    (work / "old" / "f.txt").write_text("f")
    result = await sandbox.execute_code("import os\nos.rename('old', 'new')",
                                        fs_context(work, write=True))
    assert result.error.ename == "OSError" and "shutil.move" in result.error.evalue
    result = await sandbox.execute_code("import shutil\nshutil.move('old', 'new')",
                                        fs_context(work, write=True))
    assert result.success, result.error
    assert host_tree(work) == {"new": "<dir>", "new/f.txt": "f"}


async def test_sandbox_holds_no_descriptor_of_the_overlay_hand_over(fs_sandbox):
    sandbox, work = fs_sandbox
    result = await sandbox.execute_code(textwrap.dedent("""
    import os, stat
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            found.append([int(name), stat.S_ISSOCK(os.fstat(int(name)).st_mode),
                          os.readlink(f"/proc/self/fd/{name}")])
        except OSError:
            pass
    result = found
    """), fs_context(work, write=True))
    assert result.success, result.error
    fds = {fd: (is_socket, target) for fd, is_socket, target in result["result"]}
    # 0-2 the streams, 3 the channel to the supervisor; nothing else is a socket or a layer
    assert [fd for fd, (is_socket, _) in fds.items() if is_socket] == [3], fds
    assert not any("wd0" in target or "overlay" in target for _, target in fds.values()), fds


async def test_copy_back_never_follows_a_planted_symlink_out(fs_sandbox, tmp_path):
    sandbox, work = fs_sandbox
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("untouched")
    (work / "was-a-link").symlink_to(outside)          # the host's own link, pointing out
    result = await sandbox.execute_code(textwrap.dedent(f"""
    import os
    os.symlink({str(outside)!r}, "planted")             # a link out, planted by the sandbox
    os.symlink({str(outside / "victim.txt")!r}, "victim.txt")
    os.unlink("was-a-link")                            # the host's link replaced by a directory
    os.mkdir("was-a-link")
    open("was-a-link/victim.txt", "w").write("pwned")
    os.mkfifo("fifo")
    """), fs_context(work, write=True))
    assert result.success, result.error
    assert (outside / "victim.txt").read_text() == "untouched"
    assert sorted(p.name for p in outside.iterdir()) == ["victim.txt"]
    assert host_tree(work) == {"was-a-link": "<dir>", "was-a-link/victim.txt": "pwned"}
    assert "not copied" in result.stderr and "planted" in result.stderr


async def test_session_cells_copy_back_and_a_rolled_back_cell_leaves_nothing(fs_sandbox):
    sandbox, work = fs_sandbox
    (work / "host.txt").write_text("host")
    (work / "gone-later.txt").write_text("still here")
    (work / "read-only.txt").write_text("as first read")
    session = sandbox.session(fs_context(work, write=True, max_file_size_mb=8))
    try:
        result = await session.run("open('cell1.txt', 'w').write('one')\n"
                                   "result = open('read-only.txt').read()")
        assert result["result"] == "as first read"
        assert result.success, result.error
        assert (work / "cell1.txt").read_text() == "one"   # each kept cell reaches the host
        with pytest.raises(ResourceLimitExceeded) as info:
            await session.run(textwrap.dedent("""
            import os
            open("cell1.txt", "w").write("changed by a failing cell")
            open("host.txt", "a").write(" + failing")
            os.unlink("gone-later.txt")
            open("cell2.txt", "w").write("two")
            with open("big.bin", "wb") as fh:      # past the quota (4 x 8 MB): rolled back
                while True:
                    fh.write(b"x" * (1 << 20))
            """))
        assert info.value.rolled_back
        expected = {"cell1.txt": "one", "gone-later.txt": "still here", "host.txt": "host",
                    "read-only.txt": "as first read"}
        assert host_tree(work) == expected
        # The session's own view was reverted too: it agrees with the host again.
        view = await session.run(textwrap.dedent("""
        import os
        result = {n: open(n).read() for n in sorted(os.listdir(".")) if n.endswith(".txt")}
        """))
        assert view["result"] == expected
        result = await session.run("open('cell3.txt', 'w').write('three')")
        assert result.success
        assert host_tree(work) == {**expected, "cell3.txt": "three"}
        # The host's own changes between cells show in the session (a file changed in place,
        # a new file): the host directory is the overlay's lower layer, read live.
        (work / "read-only.txt").write_text("changed on the host")
        (work / "from-host.txt").write_text("new on the host")
        view = await session.run("result = open('read-only.txt').read() + '|' + "
                                 "open('from-host.txt').read()")
        assert view["result"] == "changed on the host|new on the host"
    finally:
        await session.close()


def replace_on_host(path: Path, text: str) -> None:
    """Replace ``path`` the way JupyterLab saves a file: write a temporary file, rename it over."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


async def test_long_session_sees_host_renames_and_new_names(fs_sandbox_anywhere):
    """overlayfs caches lookups of its lower layer: a file the session opened that the host then
    replaces by rename, and a name looked up before the host created it, must still show the
    host's state in the next cell (each session cell gets a fresh overlay, which Landlock grants
    wherever the working directory lies)."""
    sandbox, work = fs_sandbox_anywhere
    (work / "data.csv").write_text("v1")
    (work / "sub").mkdir()
    (work / "sub" / "inner.txt").write_text("inner v1")
    session = sandbox.session(fs_context(work, write=True, max_file_size_mb=8))
    try:
        first = await session.run(textwrap.dedent("""
        import os
        result = [open("data.csv").read(), os.path.exists("late.txt"),
                  open("sub/inner.txt").read(), os.path.exists("sub/late.txt")]
        open("mine.txt", "w").write("from the session")
        """))
        assert first.success, first.error
        assert first["result"] == ["v1", False, "inner v1", False]
        assert (work / "mine.txt").read_text() == "from the session"
        replace_on_host(work / "data.csv", "v2")
        replace_on_host(work / "sub" / "inner.txt", "inner v2")
        replace_on_host(work / "mine.txt", "replaced on the host")
        (work / "late.txt").write_text("late")
        (work / "sub" / "late.txt").write_text("sub late")
        second = await session.run(textwrap.dedent("""
        import os
        result = [open("data.csv").read(), os.path.exists("late.txt"),
                  open("sub/inner.txt").read(), os.path.exists("sub/late.txt"),
                  open("mine.txt").read()]
        os.chdir("sub")                          # a cwd below the working directory
        """))
        assert second.success, second.error
        assert second["result"] == ["v2", True, "inner v2", True, "replaced on the host"]
        replace_on_host(work / "sub" / "inner.txt", "inner v3")
        third = await session.run("import os\nresult = [os.getcwd(), open('inner.txt').read()]")
        assert third["result"] == [str(work / "sub"), "inner v3"], third.error
        # The protected audit log stays masked in every cell's overlay.
        masked = await session.run(textwrap.dedent(f"""
        try:
            open({str(work / "audit.jsonl")!r}, "a").write("forged")
            result = "written"
        except OSError as exc:
            result = type(exc).__name__
        """))
        assert masked["result"] in ("PermissionError", "OSError"), masked["result"]
        assert "forged" not in (work / "audit.jsonl").read_text()
    finally:
        await session.close()


async def test_undo_restores_variables_not_files_and_sees_the_host_now(fs_sandbox):
    """An undo takes back the Python state of the last cell, not its files: they are on the
    host already, and the restored state sees the working directory as the host has it now."""
    sandbox, work = fs_sandbox
    session = sandbox.session(fs_context(work, write=True), undo=True)
    try:
        result = await session.run("x = 1\nopen('f.txt', 'w').write('one')")
        assert result.success, result.error
        result = await session.run("import os\nx = 2\nopen('f.txt', 'w').write('two')\n"
                                   "os.chdir('/tmp')")
        assert result.success, result.error
        await session.undo()
        replace_on_host(work / "f.txt", "host")
        result = await session.run("import os\nresult = [x, open('f.txt').read(), os.getcwd()]")
        assert result["result"] == [1, "host", str(work)], result.error
    finally:
        await session.close()


async def test_long_session_copied_back_files_keep_counting_against_the_quota(fs_sandbox):
    """What reached the host from a session still counts against its quota (4 x 8 MB), cell
    after cell, though each cell gets a fresh overlay; deleting it in the session frees it."""
    sandbox, work = fs_sandbox
    session = sandbox.session(fs_context(work, write=True, max_file_size_mb=8, timeout_seconds=20))
    write = textwrap.dedent("""
    with open({name!r}, "wb") as fh:
        for _ in range(7):
            fh.write(b"x" * (1 << 20))
    """)
    try:
        for name in ("a.bin", "b.bin", "c.bin", "d.bin"):
            result = await session.run(write.format(name=name))
            assert result.success, result.error
        with pytest.raises(ResourceLimitExceeded) as info:   # 28 MB held + 7 MB > 32 MB
            await session.run(write.format(name="e.bin"))
        assert info.value.limit == "max_file_size_mb" and "quota" in str(info.value)
        assert not (work / "e.bin").exists()
        result = await session.run("import os\nos.unlink('a.bin')")
        assert result.success, result.error
        result = await session.run(write.format(name="e.bin"))
        assert result.success, result.error
        assert sorted(p.name for p in work.glob("*.bin")) == ["b.bin", "c.bin", "d.bin", "e.bin"]
    finally:
        await session.close()


async def test_scratch_quota_counts_unlinked_open_files(process_sandbox):
    with pytest.raises(ResourceLimitExceeded) as info:
        await run(process_sandbox, """
        import os, tempfile
        held = []
        for i in range(40):                   # 40 x 10 MB = 400 MB against a 40 MB quota
            fh = tempfile.TemporaryFile()     # unlinked at once, still open
            for _ in range(10):
                fh.write(b"x" * (1 << 20))
            fh.flush()
            held.append(fh)
        """, max_file_size_mb=10, timeout_seconds=30)
    assert info.value.limit == "max_file_size_mb"
    assert "quota" in str(info.value)


# -- inotify -------------------------------------------------------------------------------------
def host_can_use_inotify(count: int = 4) -> bool:
    fds = []
    try:
        for _ in range(count):
            fd = _libc.inotify_init1(os.O_CLOEXEC)
            if fd < 0:
                return False
            fds.append(fd)
        return True
    finally:
        for fd in fds:
            os.close(fd)


async def test_inotify_exhaustion_is_contained(process_sandbox):
    ctx = SecurityContext("tester", resource_limits={"timeout_seconds": 10})
    session = process_sandbox.session(ctx)
    try:
        held = await session.run("""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
fds = []
while len(fds) < 100000:
    fd = libc.inotify_init1(0o2000000)
    if fd < 0:
        break
    fds.append(fd)
count = len(fds)
""")
        assert held.success, held.error
        assert host_can_use_inotify()
    finally:
        await session.close()


FAN_REPORT_FID = 0x200  # what an unprivileged fanotify group needs (Linux >= 5.13)


def host_can_use_fanotify() -> bool:
    fd = _libc.fanotify_init(FAN_REPORT_FID, os.O_RDONLY)
    if fd < 0:
        return False
    os.close(fd)
    return True


async def test_fanotify_exhaustion_is_contained(process_sandbox):
    """fanotify groups are counted per user like inotify instances (128 by default): a
    session that held them all left its OS user (root, for a supervisor run as root) none."""
    if not host_can_use_fanotify():
        pytest.fail("this host's user cannot make a fanotify group at all")
    ctx = SecurityContext("tester", resource_limits={"timeout_seconds": 10})
    session = process_sandbox.session(ctx)
    try:
        held = await session.run(f"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
fds = []
while len(fds) < 1000:
    fd = libc.fanotify_init({FAN_REPORT_FID}, os.O_RDONLY)
    if fd < 0:
        break
    fds.append(fd)
count = len(fds)
""")
        assert held.success, held.error
        assert held["count"] == 0  # a sandbox has no use for them
        assert host_can_use_fanotify()
    finally:
        await session.close()


async def test_pty_exhaustion_is_contained(process_sandbox):
    """Every devpts instance but the host's first draws from one pool (kernel.pty.max minus
    kernel.pty.reserve: 3072 by default): one session whose processes held them all left every
    other sandbox (and container) on the machine without a terminal (``!ls``, ``%%sh``)."""
    ctx = SecurityContext("tester", resource_limits={"timeout_seconds": 20})
    session = process_sandbox.session(ctx)
    try:
        held = await session.run("""
import os, time
ends = []
for _ in range(20):
    r, w = os.pipe()
    if os.fork() == 0:
        ptys = []
        try:
            while True:
                ptys.append(os.openpty())
        except OSError:
            pass
        os.write(w, b"%d\\n" % len(ptys))
        time.sleep(15)
        os._exit(0)
    ends.append(r)
count = sum(int(os.read(r, 32)) for r in ends)
""")
        assert held.success, held.error
        assert 0 < held["count"] <= PTY_MAX, held["count"]
        other = await run(process_sandbox, "import os\nresult = len(os.openpty())")
        assert other.success and other["result"] == 2, other.error
        over = await run(process_sandbox, f"import os\nfor _ in range({PTY_MAX + 1}): os.openpty()")
        assert not over.success  # said as what it is, not as the write quota (also ENOSPC)
        assert "terminals are all in use" in str(over.error), over.error
    finally:
        await session.close()


# -- leftovers of a killed kernel --------------------------------------------------------------
KERNEL = """
import asyncio, sys
from agenticraft.sandbox.process import ProcessSandbox
sys.path.insert(0, {tests!r})
from helpers import make_manager
from pathlib import Path

async def main():
    sandbox = ProcessSandbox(make_manager(Path({tmp!r})))
    await sandbox.start()
    from agenticraft.security import SecurityContext
    ctx = SecurityContext("tester", resource_limits={{"timeout_seconds": 10}})
    session = sandbox.session(ctx)
    await session.run("open('f.txt', 'w').write('x' * 100000)")
    print(sandbox.supervisor.zygote.scratch_root, sandbox.supervisor.zygote.pid, flush=True)
    await asyncio.sleep(120)

asyncio.run(main())
"""


async def test_nothing_left_behind_after_kernel_sigkill(tmp_path):
    tests = str(Path(__file__).resolve().parents[1])
    proc = subprocess.Popen([sys.executable, "-c", KERNEL.format(tests=tests, tmp=str(tmp_path))],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().split()
        assert line, "the kernel did not start"
        scratch_root, zygote_pid = line[0], int(line[1])
        assert os.path.isdir(scratch_root)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        cgroups = list(Path("/sys/fs/cgroup/pids/agenticraft").glob(f"{zygote_pid}-*"))
        if not os.path.exists(scratch_root) and not cgroups and not psutil.pid_exists(zygote_pid):
            break
        time.sleep(0.2)
    assert not psutil.pid_exists(zygote_pid), "the zygote outlived its SIGKILLed kernel"
    assert not os.path.exists(scratch_root)
    assert not list(Path("/sys/fs/cgroup/pids/agenticraft").glob(f"{zygote_pid}-*"))


def test_leftovers_of_dead_owners_are_reaped_at_start_up(tmp_path):
    from agenticraft.sandbox import leftovers

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    abandoned = tmp_path / f"agenticraft-{dead.pid}-abc123"
    (abandoned / "w-xyz").mkdir(parents=True)
    (abandoned / "w-xyz" / "f.txt").write_text("x")
    alive = tmp_path / f"agenticraft-{os.getpid()}-def456"  # ours: kept
    alive.mkdir()
    other = tmp_path / f"agenticraft-{os.getppid()}-ghi789"  # a live owner: kept
    other.mkdir()
    removed = leftovers.reap(str(tmp_path), cgroups=tmp_path / "no-cgroups")
    assert removed == [str(abandoned)]
    assert not abandoned.exists() and alive.exists() and other.exists()


# -- what the administrator requires -----------------------------------------------------------
async def test_policy_can_require_namespaces(tmp_path, monkeypatch):
    from agenticraft.jail.confine.probe import MECHANISMS
    from agenticraft.sandbox.process import ProcessSandbox
    from agenticraft.security.policy import REQUIRABLE
    from agenticraft.wire.errors import ConfigurationError, SandboxUnavailable

    assert set(REQUIRABLE) == set(MECHANISMS)
    with pytest.raises(ConfigurationError, match="namespace"):
        Policy.from_dict({"sandbox": {"require": ["namespace"]}})
    policy = Policy.from_dict({"sandbox": {"require": ["namespaces", "mounts"]}}, "admin.toml")
    sandbox = ProcessSandbox(make_manager(tmp_path, policy=policy))
    result = await run(sandbox, "x = 1")  # this host has them
    assert result.success
    await sandbox.close()
    monkeypatch.setenv("AGENTICRAFT_DISABLE", "namespaces")
    sandbox = ProcessSandbox(make_manager(tmp_path, policy=policy))
    with pytest.raises(SandboxUnavailable) as info:
        await run(sandbox, "x = 1")
    assert "namespaces" in str(info.value) and "admin.toml" in str(info.value)
    await sandbox.close()


#: A home's secrets a notebook server started in the home must never show a sandbox: credential
#: stores (files and directories), a browser's cookies, a shell history, Jupyter's connection files.
SECRETS = (".ssh/id_rsa", ".aws/credentials", ".gnupg/private.key", ".docker/config.json",
           ".kube/config", ".config/gcloud/credentials.db", ".netrc", ".git-credentials",
           ".pgpass", ".config/google-chrome/Default/Cookies", ".mozilla/firefox/p/cookies.sqlite",
           ".bash_history", ".jupyter/jupyter_server_config.json",
           ".local/share/jupyter/runtime/kernel-1.json")


async def test_secrets_in_a_home_working_directory_are_masked(tmp_path, monkeypatch):
    """Jupyter started in the home directory: the notebook directory is readable, ~/.ssh,
    ~/.aws, ~/.gnupg and the Jupyter runtime directory in it are not, even with write."""
    from agenticraft.sandbox.process import ProcessSandbox

    home = a_home(tmp_path, monkeypatch)
    for secret in SECRETS:
        (home / secret).parent.mkdir(parents=True, exist_ok=True)
        (home / secret).write_text("SECRET")
    sandbox = ProcessSandbox(make_manager(home))
    await sandbox.start()
    try:
        ctx = fs_context(home, write=True)
        assert (await sandbox.execute_code("data = open('notes.txt').read()", ctx))["data"] \
            == "hello"
        for secret in SECRETS:
            result = await sandbox.execute_code(
                f"import os\nseen = os.listdir({os.path.dirname(secret) or '.'!r})\n"
                f"data = open({secret!r}).read()", ctx)
            assert not result.success or result["data"] != "SECRET", secret  # a file: empty
            wrote = await sandbox.execute_code(f"open({secret!r}, 'w').write('x')", ctx)
            assert not wrote.success, secret
            assert (home / secret).read_text() == "SECRET"
    finally:
        await sandbox.close()


async def test_refused_file_operations_say_which_limit(process_sandbox):
    hidden = await run(process_sandbox, "open('/etc/passwd').read()")
    assert hidden.error.ename in ("FileNotFoundError", "PermissionError")
    assert "filesystem_access" in hidden.error.evalue
    read_only = await run(process_sandbox, "open('/usr/agenticraft-x', 'w')")
    assert "sandbox" in read_only.error.evalue and "write" in read_only.error.evalue
    missing = await run(process_sandbox, "open('no-such-file.txt')")  # really missing: no hint
    assert "sandbox" not in missing.error.evalue


# -- ordinary parallel code -----------------------------------------------------------------------
JOBLIB = """
import os
from joblib import Parallel, delayed
def square(x):
    return x * x, os.getpid()
out = Parallel(n_jobs=2, backend="loky")(delayed(square)(i) for i in range(8))
result = [value for value, _pid in out]
"""


async def test_joblib_loky_parallel_works(process_sandbox):
    """joblib's default backend (loky: exec'd worker processes, semaphores in /dev/shm, each
    worker reading its own /proc/<pid> through psutil) runs with default limits."""
    result = await run(process_sandbox, JOBLIB, timeout_seconds=60)
    assert result.success, (result.error, result.stderr[-2000:])
    assert result["result"] == [x * x for x in range(8)]


# -- PID namespace --------------------------------------------------------------------------------
def pid_namespace(sandbox) -> bool:
    return bool(sandbox.supervisor.mechanisms["mounts"].get("pid_namespace")
                and sandbox.supervisor.mechanisms["mounts"]["active"])


async def test_own_pid_namespace_and_proc(process_sandbox):
    """A sandbox sees its own processes only: the host's (this test, the zygote) do not exist."""
    if not pid_namespace(process_sandbox):
        pytest.skip("no PID namespace with its own /proc on this host (doctor says so)")
    result = await run(process_sandbox, """
    import os
    me = os.getpid()
    pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())
    init = open('/proc/1/cmdline', 'rb').read()
    """)
    assert result.success, result.error
    assert result["me"] == 2 and result["pids"] == [1, 2]
    assert os.getpid() not in result["pids"]


async def test_ending_a_session_ends_every_process_of_its_namespace(process_sandbox):
    """A process that left the worker's tree (re-parented to the namespace's init) dies with the
    sandbox: killing the keeper alone kills the init (its parent-death signal), and the kernel
    kills every other process of the namespace with it."""
    if not pid_namespace(process_sandbox):
        pytest.skip("no PID namespace with its own /proc on this host (doctor says so)")
    session = process_sandbox.session(SecurityContext("tester", resource_limits={
        "timeout_seconds": 10}))
    result = await session.run("""
import os, time
r, w = os.pipe()
if os.fork() == 0:
    if os.fork() == 0:
        os.write(w, b"x")
        time.sleep(600)
    os._exit(0)
os.wait()
os.read(r, 1)
""")
    assert result.success, result.error
    handle = session.handle

    def tree() -> list[int]:
        return [handle.keeper, *(p.pid for p in psutil.Process(handle.keeper).children(
            recursive=True))]

    # The checkpoint the run forked from was just killed; its runner (the live worker now) is
    # re-parented to the init meanwhile, and a /proc walk in between does not find it.
    deadline = time.monotonic() + 10
    while handle.pid not in (everything := tree()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert handle.init in everything and handle.pid in everything
    assert len(everything) >= 4  # keeper, init, worker and the orphan (wherever it was put)
    procs = []
    for pid in everything:  # (the checkpoint the promotion killed may be gone by now)
        with contextlib.suppress(psutil.NoSuchProcess):
            procs.append(psutil.Process(pid))
    assert {handle.keeper, handle.init, handle.pid} <= {p.pid for p in procs}
    os.kill(handle.keeper, signal.SIGKILL)  # only the keeper: the rest must follow by itself
    _gone, alive = psutil.wait_procs(procs[1:], timeout=10)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    await session.close()
