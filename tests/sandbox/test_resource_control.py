"""Resource control v2: the limits hold for the whole session, whatever its process structure.

Each test is an evasion that worked against a polled snapshot of the process tree: a run that
promotes itself, threads and children left in the checkpoint, children waking a throttled
spinner, ``done`` frames planted between runs. Each must be stopped, accounted, and killed with
the session: nothing of a session is alive after ``session.close()``. Two run again with an
undo state kept (``undo=True``: one more stopped checkpoint).
"""

from __future__ import annotations

import contextlib

import pytest

from agenticraft.security import SecurityContext
from agenticraft.wire.errors import ChannelAbuse, ResourceLimitExceeded

from helpers import is_gone, name_me, wait_gone, wait_named_gone

pytestmark = pytest.mark.timeout(120)

SELF_PROMOTE = name_me("selfpromote") + """\
import os, stat
for fd in range(4, 256):  # every pipe this process may write to, the promote pipe included
    try:
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.write(fd, b"P")
    except OSError:
        pass
while True:
    pass
"""


@pytest.mark.parametrize("undo", [False, True], ids=["", "undo"])
async def test_a_run_cannot_promote_itself(process_sandbox, undo):
    ctx = SecurityContext("student", resource_limits={"timeout_seconds": 1.5})
    async with process_sandbox.session(ctx, undo=undo) as session:
        await session.run("x = 'kept'")
        with pytest.raises(ResourceLimitExceeded) as info:
            await session.run(SELF_PROMOTE)
        assert info.value.limit == "timeout_seconds"
        assert info.value.rolled_back
        assert wait_named_gone("selfpromote")  # killed at its timeout, not at close
        assert (await session.run("y = x"))["y"] == "kept"


LEAVE_A_FORKING_THREAD = """\
import os, threading
go_r, go_w = os.pipe()          # the next run says "go" here ...
pid_r, pid_w = os.pipe()        # ... and reads the forked child's pid here
def later():
    os.read(go_r, 1)  # wakes during the next run: by then this thread lives in the checkpoint
    pid = os.fork()
    if pid == 0:
        blob = bytearray(40 * 1024 * 1024)
        while True:
            pass
    os.write(pid_w, str(pid).encode())
threading.Thread(target=later, daemon=True).start()
"""

WAKE_THE_CHECKPOINT_THREAD = """\
import time
os.write(go_w, b"g")
child = int(os.read(pid_r, 32))
time.sleep(1.5)  # the child spins meanwhile: its CPU time is this run's
"""


async def test_children_of_checkpoint_threads_die_with_the_session(process_sandbox):
    ctx = SecurityContext("student", resource_limits={"timeout_seconds": 5})
    async with process_sandbox.session(ctx) as session:
        await session.run(LEAVE_A_FORKING_THREAD)
        sleeper = await session.run(WAKE_THE_CHECKPOINT_THREAD)
        if "cpuacct" in session.handle.unit.caps:  # the spinning child is this run's cost
            assert sleeper.resource_usage["cpu_seconds"] > 0.05, sleeper.resource_usage
        inner = int(sleeper["child"])
        child = session.handle.host_pid(inner)  # (its number in the sandbox's PID namespace)
        assert child is not None and not is_gone(child)
        assert child in session.handle.unit.members()  # accounted: it is part of the unit
        holders = [session.pid]
        unit = session.handle.unit
    assert wait_gone(child), "a child forked in the checkpoint outlived session.close()"
    assert all(wait_gone(pid) for pid in holders)
    assert all(wait_gone(pid) for pid in unit.members())


WAKE_THE_SPINNER = """\
import os, signal, time
me = os.getpid()

def waker():  # lives 0.1 s, waking the spinner every millisecond
    end = time.monotonic() + 0.1
    while time.monotonic() < end:
        os.kill(me, signal.SIGCONT)
        time.sleep(0.001)
    os._exit(0)

end = time.monotonic() + 4
last = 0.0
while time.monotonic() < end:
    if time.monotonic() - last > 0.01:  # a new waker between two polls of any watchdog
        last = time.monotonic()
        if os.fork() == 0:
            waker()
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
times = os.times()
cpu = times.user + times.system
"""


async def test_children_cannot_wake_a_throttled_spinner(process_sandbox):
    ctx = SecurityContext("student", resource_limits={"timeout_seconds": 20, "cpu_percent": 10})
    async with process_sandbox.session(ctx) as session:
        result = await session.run(WAKE_THE_SPINNER)
    # 10 % of 4 s is 0.4 s for the whole unit (unstoppable, the spinner took 1.3-2.2 s)
    assert result["cpu"] < 0.8, result["cpu"]
    assert result.resource_usage["cpu_seconds"] < 1.0, result.resource_usage


PLANT_DONE_FRAMES = """\
import os, socket, threading, time
from agenticraft.wire import protocol
chan = socket.socket(fileno=os.dup(3))
go_r, go_w = os.pipe()
def plant():
    os.read(go_r, 1)  # the next run says go: this thread lives on in the session meanwhile
    while True:
        for run in range(1, 64):
            for ev in ("started", "done"):
                chan.sendall(protocol.encode({"ev": ev, "run": run, "pid": 1, "ok": True,
                                              "values": {"forged": True}}))
        time.sleep(0.01)
threading.Thread(target=plant, daemon=True).start()
"""


@pytest.mark.parametrize("undo", [False, True], ids=["", "undo"])
async def test_planted_frames_cannot_forge_a_result(process_sandbox, undo):
    ctx = SecurityContext("student", resource_limits={"timeout_seconds": 5})
    async with process_sandbox.session(ctx, undo=undo) as session:
        await session.run(PLANT_DONE_FRAMES)
        with contextlib.suppress(ChannelAbuse):  # the planting starts meanwhile
            await session.run("os.write(go_w, b'g')\nimport time\ntime.sleep(0.4)")
        answered = 0
        for attempt in range(3):
            # Never the forged result: the planted frames are dropped (wrong run id), or, once
            # they exceed the run's frame budget (issue 13), the run ends as channel abuse.
            try:
                result = await session.run(f"import time\ntime.sleep(0.05)\nanswer = {attempt}")
            except ChannelAbuse as exc:
                assert "more result frames than a run has" in str(exc)
                continue
            assert result.success, result.error
            assert "forged" not in result
            assert result["answer"] == attempt
            assert not is_gone(session.pid)
            answered += 1
        assert answered, "the session is wedged: every run after the planting was refused"


# -- raw errors name their limits ---------------------------------------------------------------
@pytest.mark.parametrize(("code", "limit", "words"), [
    ("open('big.bin', 'wb').write(b'x' * (12 * 1024 * 1024))", "max_file_size_mb",
     "max_file_size_mb"),
    # numpy's tofile/np.save report a short fwrite without an errno
    ("raise OSError('3000000 requested and 1310704 written')", "max_file_size_mb",
     "max_file_size_mb"),
    ("import threading, time\n"
     "for _ in range(40):\n"
     "    threading.Thread(target=time.sleep, args=(5,), daemon=True).start()",
     "max_processes", "threads count"),
    ("raise ImportError('libgfortran.so.5: failed to map segment from shared object')",
     "memory_mb", "memory_mb"),
])
async def test_raw_errors_name_their_limit(process_sandbox, code, limit, words):
    if limit == "max_processes" and "DEGRADED" in process_sandbox.host_report()[limit]:
        pytest.skip("nothing bounds threads here (root without a pids cgroup)")
    ctx = SecurityContext("student", resource_limits={"timeout_seconds": 10,
                                                      "max_file_size_mb": 10})
    async with process_sandbox.session(ctx) as session:
        await session.run("x = 'kept'")
        with pytest.raises(ResourceLimitExceeded) as info:
            await session.run(code)
        assert info.value.limit == limit
        assert words in str(info.value)
        assert "To fix it" in str(info.value)
        assert (await session.run("y = x"))["y"] == "kept"


# -- no wedge: after any failure the next trivial run answers ------------------------------------
FAILURES = {
    "limit": "x = 'lost'\nwhile True:\n    pass",
    "memory": "x = 'lost'\nb = []\nwhile True:\n    b.append(bytearray(32 * 1024 * 1024))",
    "crash": "import os\nos._exit(3)",
    "protocol": "import os\nos.write(3, b'\\xff' * 64)\nimport time\ntime.sleep(1)",
    "failed import": "raise ImportError('libx.so: failed to map segment from shared object')",
    "checkpoint killed": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n"
                         "while True:\n    pass",
}


@pytest.mark.parametrize("kind", sorted(FAILURES))
async def test_no_wedge_after_any_failure(process_sandbox, kind):
    ctx = SecurityContext("student", resource_limits={"timeout_seconds": 2, "memory_mb": 256})
    async with process_sandbox.session(ctx) as session:
        await session.run("x = 'kept'")
        try:
            await session.run(FAILURES[kind])
        except Exception as exc:  # each kind fails its own way; what matters is what follows
            assert str(exc)
        for attempt in range(3):
            try:
                result = await session.run(f"z = {attempt}")
            except ResourceLimitExceeded as exc:  # the state was lost: the user is told so
                assert "lost" in str(exc) and attempt == 0  # once; a wedge would repeat it
                continue
            assert result.success
            assert result["z"] == attempt
            assert result.execution_time_ms < 1500


# -- memory bombs stop at memory_mb -------------------------------------------------------------
BOMBS = {
    "bytearray": "b = []\nwhile True:\n    b.append(bytearray(32 * 1024 * 1024))",
    "numpy": "import numpy as np\na = []\nwhile True:\n    a.append(np.ones(4 * 1024 * 1024))",
    "shared anonymous mapping": (
        "import mmap\nm = []\nwhile True:\n"
        "    mm = mmap.mmap(-1, 32 * 1024 * 1024)\n    mm.write(b'x' * (32 * 1024 * 1024))\n"
        "    m.append(mm)"),
    "thread stacks": (
        "import threading, time\nthreading.stack_size(256 * 1024 * 1024)\nts = []\n"
        "while True:\n    t = threading.Thread(target=time.sleep, args=(30,), daemon=True)\n"
        "    t.start()\n    ts.append(t)"),
    "tmpfs files": (
        "import itertools\nfor n in itertools.count():\n"
        "    with open(f'/dev/shm/fill-{n}', 'wb') as fh:\n"
        "        fh.write(b'x' * (8 * 1024 * 1024))"),
    "pipe buffers": (
        "import fcntl, os\nkeep = []\nwhile True:\n    r, w = os.pipe()\n"
        "    try:\n        fcntl.fcntl(w, 1031, 1024 * 1024)  # F_SETPIPE_SZ\n"
        "    except PermissionError:\n        pass  # past the user's pipe pages: small pipes\n"
        "    os.set_blocking(w, False)\n"
        "    try:\n        while True:\n            os.write(w, b'x' * 65536)\n"
        "    except BlockingIOError:\n        pass\n    keep.append((r, w))"),
}
#: What the fallback (no memory cgroup) does not bound: doctor says so; the run still ends.
FALLBACK_UNBOUNDED = {"pipe buffers", "tmpfs files"}
#: The kernel caps one OS user's pipe buffers near 64 MB in all (fs.pipe-user-pages-soft, shared
#: with every other process of that user): a lower limit, and that cap may come first.
BOMB_MEMORY = {"pipe buffers": 40}


@pytest.mark.parametrize("bomb", sorted(BOMBS))
async def test_memory_bombs_stop_at_memory_mb(process_sandbox, bomb):
    memory = process_sandbox.host_report()["memory_mb"]
    # max_file_size_mb high enough that the write quota (4 x) is not what stops the tmpfs bomb
    ctx = SecurityContext("student", resource_limits={
        "timeout_seconds": 8, "memory_mb": BOMB_MEMORY.get(bomb, 128), "max_file_size_mb": 100})
    async with process_sandbox.session(ctx) as session:
        await session.run("x = 'kept'")
        kernel_bounded = bomb == "pipe buffers"  # per-user pipe pages, shared by the OS user
        if kernel_bounded or (memory.startswith("DEGRADED") and bomb in FALLBACK_UNBOUNDED):
            if memory.startswith("DEGRADED"):
                assert bomb.split()[0] in memory  # doctor names what the fallback cannot bound
            try:  # the kernel's own per-user bounds (pipe pages, open files) may stop it first
                result = await session.run(BOMBS[bomb])
            except ResourceLimitExceeded as exc:  # stopped by a bound, not by the clock
                assert exc.limit != "timeout_seconds", exc
            else:
                assert not result.success
        else:
            with pytest.raises(ResourceLimitExceeded) as info:
                await session.run(BOMBS[bomb])
            # reserved stacks are memory only for RLIMIT_DATA/AS; a cgroup counts touched pages,
            # so there the thread count (pids.max) may be what stops them
            allowed = ("memory_mb", "max_processes") if bomb == "thread stacks" else ("memory_mb",)
            assert info.value.limit in allowed, info.value
        assert (await session.run("y = x"))["y"] == "kept"


async def test_a_run_may_tighten_memory_below_the_sessions_use(process_sandbox):
    ctx = SecurityContext("student", resource_limits={"timeout_seconds": 8, "memory_mb": 256})
    async with process_sandbox.session(ctx) as session:
        await session.run("ballast = bytearray(80 * 1024 * 1024)\nx = 'kept'")
        tight = ctx.resource_limits.replace(memory_mb=48)
        with pytest.raises(ResourceLimitExceeded) as info:
            await session.run("b = []\nwhile True:\n    b.append(bytearray(8 * 1024 * 1024))",
                              limits=tight)
        assert info.value.limit == "memory_mb"
        # back to the session's own limit between runs and for the next run
        result = await session.run("more = bytearray(64 * 1024 * 1024)\ny = x")
        assert result["y"] == "kept"


BUSY_2S = "import time\nend = time.monotonic() + 2\nwhile time.monotonic() < end:\n    pass\nx = 2"


async def test_a_long_cell_yields_the_cpu_and_the_next_cell_gets_it_back(process_sandbox):
    """A cell running past INTERACTIVE_SECONDS yields the CPU to interactive work (its unit's
    ``cpu.idle``: busy loops no longer delay other users' short cells); the session's next cell
    starts with the CPU of any program again. Without a cpu controller nothing changes and the
    host report says there is no such priority."""
    from agenticraft.sandbox.host_report import limit_enforcement

    ctx = SecurityContext("student", resource_limits={"timeout_seconds": 30})
    async with process_sandbox.session(ctx) as session:
        await session.run("x = 1")
        unit = session.handle.unit
        report = limit_enforcement(process_sandbox.supervisor.mechanisms)["cpu_percent"]
        if not unit.cpu:
            assert "no priority for interactive cells" in report
            assert unit.set_interactive(False) is False
            return
        assert "yield the CPU to interactive cells" in report
        idle = unit._path("cpu") / "cpu.idle"
        assert idle.read_text().strip() == "0"
        assert (await session.run(BUSY_2S))["x"] == 2
        assert idle.read_text().strip() == "1"  # demoted while it ran, until the next cell
        assert (await session.run("y = x"))["y"] == 2
        assert idle.read_text().strip() == "0"
