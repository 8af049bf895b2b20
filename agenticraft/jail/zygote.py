"""The zygote: a warm Python that forks confined workers in milliseconds.

Started once per supervisor with
``python -I -c "...; main()" PACKAGE_ROOT FD DISABLED PRELOAD SCRATCH_ROOT STACK_ROOM_MB``
(``-c`` so that the package root, passed as an argument, can go first on ``sys.path``), with an
allow-listed environment and no descriptors but its control socket (SOCK_SEQPACKET). For each
``spawn`` request it forks a child that confines itself and becomes a worker; the worker's
channel and output pipes are passed to the supervisor with SCM_RIGHTS. One child for the default
profile is kept forked and confined ahead of time. The zygote is a child subreaper: any process
a dead worker left behind becomes its child and is killed. With STACK_ROOM_MB (the restricted
sandbox's zygote) it first re-execs itself once with that RLIMIT_STACK, so that its workers'
main-thread stacks can grow past their memory limit (``confine.rlimits``).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import sys
import tempfile
import time
from typing import Any

from agenticraft.jail.confine.libc import PR_SET_CHILD_SUBREAPER, PR_SET_PDEATHSIG, prctl
from agenticraft.wire.environment import allowed_env

CHILD_FD = 3
UNIT_KEEP_SECONDS = 5.0  # a dead worker's cgroups outlive it this long (see _remove_dead_units)
PREFORK = 2  # confined workers kept ready for the default profile
#: Modules worth having in memory before the first fork (a fork then shares them).
PRELOAD = ("json", "re", "math", "collections", "itertools", "functools", "datetime", "decimal",
           "fractions", "statistics", "random", "string", "traceback", "io", "gc", "ctypes",
           "struct", "base64", "hashlib", "textwrap", "dataclasses", "typing", "enum", "copy",
           "operator", "heapq", "bisect", "csv", "pprint")


class Zygote:
    def __init__(self, control: socket.socket, disabled: list[str],
                 scratch_root: str = "") -> None:
        from agenticraft.jail.confine import probe
        self.control = control
        self.scratch_root = scratch_root  # removed when the zygote ends, however its parent did
        self.pid = os.getpid()
        self.mechanisms = probe.mechanisms(disabled)
        if self.mechanisms["seccomp"]["active"]:
            from agenticraft.jail.confine import seccomp
            seccomp.precompile()  # workers then load ready-made BPF instead of building it
        self.workers: set[int] = set()
        # cgroup units of dead workers -> when they died; removed once empty and old enough for
        # the supervisor to have read them (its OOM count and peak memory)
        self.cgroups: dict[str, float] = {}
        self.session_ids: set[int] = set()  # a session's runner outlives its first process
        self.plans: dict[str, dict[str, Any]] = {}  # private-root plans per profile
        # Workers forked and confined ahead of time for the most recent pre-forked profile.
        self.ready_key = ""
        self.ready: list[tuple[int, list[int], str]] = []

    # -- main loop ------------------------------------------------------------------------------
    def serve(self) -> None:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self._reply({"ev": "hello", "pid": self.pid, "mechanisms": self.mechanisms})
        while True:
            readable, _, _ = select.select([self.control, wake_r], [], [])
            if wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 4096)
                self._reap()
            if self.control in readable:
                data = self.control.recv(1 << 20)
                if not data:
                    self.shutdown()
                try:
                    msg = json.loads(data)
                    self._handle(msg)
                except Exception as exc:  # a bad request must not take the zygote down
                    self._reply({"ok": False, "error": f"{type(exc).__name__}: {exc}"})

    def _handle(self, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        if op == "spawn":
            self._remove_dead_units()
            profile = msg["profile"]
            key = json.dumps(profile, sort_keys=True)
            if key == self.ready_key and self.ready:
                pid, fds, scratch = self.ready.pop(0)
            else:
                pid, fds, scratch = self._fork_worker(profile)
            if msg.get("session"):
                self.session_ids.add(pid)
            self._reply({"ok": True, "pid": pid, "scratch": scratch}, fds)
            for fd in fds:
                os.close(fd)
            if msg.get("prefork"):
                self._refill(key, profile)
        elif op == "ping":
            self._reply({"ok": True, "pid": self.pid, "workers": len(self.workers)})
        elif op == "shutdown":
            self.shutdown()
        else:
            self._reply({"ok": False, "error": f"unknown op {op!r}"})

    def _refill(self, key: str, profile: dict[str, Any]) -> None:
        if key != self.ready_key:
            for _pid, fds, _scratch in self.ready:  # the worker sees EOF and exits
                for fd in fds:
                    os.close(fd)
            self.ready = []
            self.ready_key = key
        while len(self.ready) < PREFORK:
            self.ready.append(self._fork_worker(profile))

    def _reply(self, message: dict[str, Any], fds: list[int] | tuple[int, ...] = ()) -> None:
        data = json.dumps(message).encode()
        if fds:
            socket.send_fds(self.control, [data], list(fds))
        else:
            self.control.send(data)

    # -- children -------------------------------------------------------------------------------
    def _fork_worker(self, profile: dict[str, Any]) -> tuple[int, list[int], str]:
        if self.mechanisms["landlock"]["active"]:
            from agenticraft.jail.confine import landlock
            landlock.prepare([*profile["read_paths"], *profile["write_paths"],
                              *profile.get("deny_paths", ())])
        if self.mechanisms["namespaces"]["active"] and self.mechanisms["mounts"]["active"]:
            profile = {**profile, "root_plan": self._root_plan(profile)}
        scratch = tempfile.mkdtemp(prefix="w-", dir=profile["scratch_root"])
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            try:
                self._child(profile, scratch, child_end.fileno(), out_w, err_w)
            finally:
                os._exit(70)
        child_end.close()
        os.close(out_w)
        os.close(err_w)
        self.workers.add(pid)
        return pid, [parent_end.detach(), out_r, err_r], scratch

    def _root_plan(self, profile: dict[str, Any]) -> dict[str, Any]:
        """The private root's plan, computed once per profile (saves each worker ~0.7 ms)."""
        key = json.dumps(profile, sort_keys=True)
        if key not in self.plans:
            from agenticraft.jail.confine import mounts
            if len(self.plans) >= 32:
                self.plans.clear()
            self.plans[key] = mounts.plan(profile)
        return self.plans[key]

    def _child(self, profile: dict[str, Any], scratch: str, chan: int, out_w: int,
               err_w: int) -> None:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        devnull = os.open("/dev/null", os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        os.dup2(chan, CHILD_FD)
        os.closerange(CHILD_FD + 1, 1 << 16)  # the zygote's socket and every other pipe
        os.set_inheritable(CHILD_FD, False)
        workdir = profile.get("workdir") or scratch
        env = allowed_env(os.environ)
        env.update(HOME=scratch, TMPDIR=scratch, PYTHONDONTWRITEBYTECODE="1")
        os.environ.clear()
        os.environ.update(env)
        from agenticraft.jail.confine.apply import confine
        profile = {**profile, "write_paths": [*profile["write_paths"], scratch],
                   "scratch": scratch}
        try:
            os.chdir(workdir)
            applied = confine(profile, self.mechanisms, expected_parent=self.pid)
        except Exception as exc:
            chan_sock = socket.socket(fileno=CHILD_FD)
            from agenticraft.wire import protocol
            protocol.send(chan_sock, {"ev": "fatal", "error": f"{type(exc).__name__}: {exc}"})
            os._exit(71)
        from agenticraft.jail.worker import main
        main(CHILD_FD, profile.get("executor", "exec"),
             {"pid": os.getpid(), "applied": applied, "scratch": scratch},
             egress=(profile["egress_socket"], profile["egress_key"])
             if profile.get("egress_socket") else None)

    def _reap(self) -> None:
        died = False
        while True:
            try:
                pid, _status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid in self.workers:
                self.workers.discard(pid)
                self.cgroups[f"{self.pid}-{pid}"] = time.monotonic()
                died = True
        if died:
            self._kill_orphans()
        self._remove_dead_units()

    def _kill_orphans(self) -> None:
        """Processes a dead worker left behind were re-parented to us: kill them."""
        from agenticraft.jail.tree import children, kill_tree
        waiting = {entry[0] for entry in self.ready}
        for child in children(self.pid):
            if child in self.workers or child in waiting:
                continue
            try:
                if os.getsid(child) in self.session_ids:
                    continue  # a promoted session runner: the supervisor owns its lifetime
            except OSError:
                continue
            kill_tree(child)

    def shutdown(self, *_: Any) -> None:
        from agenticraft.jail.tree import kill_tree
        kill_tree(self.pid, include_root=False)
        self._reap()
        names = set(self.cgroups) | {f"{self.pid}-{pid}" for pid in self.workers}
        deadline = time.monotonic() + 2.0  # killed processes leave their cgroup as they exit
        while names and time.monotonic() < deadline:
            names = {name for name in names if not self._remove_unit(name)}
            if names:
                with contextlib.suppress(ChildProcessError):
                    while os.waitpid(-1, os.WNOHANG)[0]:
                        pass
                time.sleep(0.02)
        if self.scratch_root:
            shutil.rmtree(self.scratch_root, ignore_errors=True)
        os._exit(0)

    def _remove_dead_units(self) -> None:
        ripe = time.monotonic() - UNIT_KEEP_SECONDS
        for name, died in list(self.cgroups.items()):
            if died < ripe and self._remove_unit(name):
                del self.cgroups[name]

    def _remove_unit(self, name: str) -> bool:
        """Remove a dead worker's cgroups (True once gone, or when there are none)."""
        from agenticraft.jail.confine import cgroups
        from agenticraft.jail.confine.apply import unit_bases
        active = {n for n, info in self.mechanisms.items() if info.get("active")}
        bases = unit_bases(self.mechanisms, active)
        return not bases or cgroups.remove(bases, name)


def main() -> None:
    control = socket.socket(fileno=int(sys.argv[1]))
    disabled = [d for d in sys.argv[2].split(",") if d] if len(sys.argv) > 2 else []
    extra_preload = [m for m in sys.argv[3].split(",") if m] if len(sys.argv) > 3 else []
    scratch_root = sys.argv[4] if len(sys.argv) > 4 else ""
    stack_room = int(sys.argv[5]) if len(sys.argv) > 5 and sys.argv[5] else 0
    if stack_room:
        from agenticraft.jail.confine import rlimits
        if rlimits.reserve_stack_room(stack_room):
            os.execv(sys.executable, sys.orig_argv)  # the control socket is inherited
        import threading
        threading.stack_size(rlimits.THREAD_STACK_BYTES)
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    for name in (*PRELOAD, *extra_preload):
        with contextlib.suppress(ImportError):
            __import__(name)
    from agenticraft.jail import (
        tree,  # noqa: F401
        worker,  # noqa: F401
    )
    from agenticraft.jail.confine import apply, landlock, mounts, namespaces, seccomp  # noqa: F401
    zygote = Zygote(control, disabled, scratch_root)
    signal.signal(signal.SIGTERM, zygote.shutdown)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    zygote.serve()


if __name__ == "__main__":
    main()
