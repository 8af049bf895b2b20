"""The zygote: a warm Python that forks confined workers in milliseconds.

Started once per supervisor with
``python -I -c "...; main()" PACKAGE_ROOT FD DISABLED PRELOAD SCRATCH_ROOT STACK_ROOM_MB``
(``-c`` so that the package root, passed as an argument, can go first on ``sys.path``), with an
allow-listed environment and no descriptors but its control socket (SOCK_SEQPACKET). For each
``spawn`` request it forks a child that confines itself and becomes a worker; the worker's
channel and output pipes are passed to the supervisor with SCM_RIGHTS. One child for the default
profile is kept forked and confined ahead of time, and for any other profile one "blank" child
waits already forked and placed in its own cgroup unit (joining a unit is one migration per
cgroup hierarchy, 0.3-1 ms each: the costly part of a fresh start on cgroup v1); it learns its
profile when a spawn needs it, and only then confines itself. The zygote is a child subreaper:
any process a dead worker left behind becomes its child and is killed. With STACK_ROOM_MB (the
restricted sandbox's zygote) it first re-execs itself once with that RLIMIT_STACK, so that its
workers' main-thread stacks can grow past their memory limit (``confine.rlimits``).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
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

from agenticraft.jail import prefault
from agenticraft.jail.confine.apply import ahead_possible, fits_ahead, unit_limits
from agenticraft.jail.confine.libc import PR_SET_CHILD_SUBREAPER, PR_SET_PDEATHSIG, prctl
from agenticraft.jail.confine.mounts import WRITEBACK_FD
from agenticraft.wire.environment import allowed_env

CHILD_FD = 3
UNIT_KEEP_SECONDS = 5.0  # a dead worker's cgroups outlive it this long (see _remove_dead_units)
PREFORK = 2  # confined workers kept ready for the default profile
MAX_PROFILES = 64  # profiles kept by reference (see Zygote._profile)
BLANKS = 1  # forked, unit-joined children waiting for a profile (any profile)
#: A ready worker handed out is replaced when the supervisor says its run ended (``refill``),
#: or after this long without a request: never while the caller's run may still need the CPU
#: (a worker confining itself costs ~10 ms of CPU; on a 2-core machine it slowed the run).
REFILL_IDLE_SECONDS = 0.05
#: The one extra descriptor a child may get: a blank's profile pipe, or the socket on which a
#: writable working directory's overlay is handed to the supervisor (never both).
KEEP_FD = WRITEBACK_FD
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
        self.mechanisms = probe.mechanisms(disabled, prepare=True)
        if self.mechanisms["seccomp"]["active"]:
            from agenticraft.jail.confine import seccomp
            seccomp.precompile()  # workers then load ready-made BPF instead of building it
        from agenticraft.jail.confine.apply import unit_layout
        self.unit = unit_layout(self.mechanisms)  # each worker's cgroup unit here (None: none)
        self.workers: set[int] = set()
        # cgroup units of dead workers -> when they died; removed once empty and old enough for
        # the supervisor to have read them (its OOM count and peak memory)
        self.cgroups: dict[str, float] = {}
        self.session_ids: set[int] = set()  # a session's runner outlives its first process
        self.plans: dict[str, dict[str, Any]] = {}  # private-root plans per profile
        # Profiles the supervisor sent, by its reference: a spawn of a profile seen before
        # carries only the reference (no 2 KB to decode and key again on the spawn's path).
        self.profiles: dict[int, tuple[dict[str, Any], str]] = {}
        # An empty scratch directory per scratch root, made after the last spawn (off its path).
        self.spare_scratch: dict[str, str] = {}
        # Workers forked and confined ahead of time for the most recent pre-forked profile.
        self.ready_key = ""
        self.ready_profile: dict[str, Any] | None = None
        self.ready: list[tuple[int, list[int], str]] = []
        self.refill_due: float | None = None  # when to refill the ready pool (see REFILL_IDLE)
        # Each worker's scratch directory on the host: removed once the worker is reaped (its
        # mount namespace, which may still have mounts on it, is gone then: a cheap rmdir).
        self.scratch: dict[int, str] = {}
        # Only a worker with a PID namespace lives exactly as long as the zygote's child (its
        # keeper); without one, a session's runner outlives it, and the host removes scratch.
        mech = self.mechanisms
        self.scratch_dies_with_child = bool(
            mech["namespaces"]["active"] and mech["mounts"]["active"]
            and mech["mounts"].get("pid_namespace"))
        # Blank children: (pid, control pipe's write end, the worker's fds). With ``ahead``
        # each is in its namespaces already, with its init and worker (``apply.prepare``).
        self.ahead = ahead_possible(mech)
        # The limits of the last profile a blank could serve: a prepared blank writes them on
        # its unit while it waits; confine skips the writes if its profile's are the same.
        self.unit_guess: dict[str, Any] | None = None
        # What prepared blanks learn about the pages a worker writes on its way (``prefault``).
        self.blank_plan = prefault.BlankPlan() if self.ahead else None
        self.blanks_made = 0
        self.blanks: list[tuple[int, int, list[int]]] = []

    # -- main loop ------------------------------------------------------------------------------
    def serve(self) -> None:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self._reply({"ev": "hello", "pid": self.pid, "mechanisms": self.mechanisms,
                     "profile_refs": True})
        self._refill_blanks()
        while True:
            timeout = None
            if self.refill_due is not None:
                timeout = max(0.0, self.refill_due - time.monotonic())
            readable, _, _ = select.select([self.control, wake_r], [], [], timeout)
            if not readable:  # idle since the last spawn: refill the pool now
                self._refill_ready()
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
            found = self._profile(msg)
            if found is None:
                self._reply({"ok": False, "unknown_ref": True,
                             "error": "unknown profile reference"})
                return
            profile, key = found
            if key == self.ready_key and self.ready:
                pid, fds, scratch = self.ready.pop(0)
            else:
                # A caller waits for this one: no warm-up run first (it costs more than it
                # saves the caller's run; a worker forked ahead, for the pool, has one).
                pid, fds, scratch = self._fork_worker(profile, key, blank=msg.get("pool", True),
                                                      warm=bool(msg.get("background")))
            if msg.get("session"):
                self.session_ids.add(pid)
            self._reply({"ok": True, "pid": pid, "scratch": scratch}, fds)
            for fd in fds:
                os.close(fd)
            if msg.get("prefork"):
                self._want_ready(key, profile, now=bool(msg.get("background")))
            # Off the caller's path: the blanks forked from now on find this profile's paths
            # resolved (Landlock's cache), as a fresh fork from here does (~0.7 ms each).
            self._prepare_paths(profile)
            if self.ahead and fits_ahead(profile):  # the next blank's unit gets these limits
                self.unit_guess = unit_limits(profile, helpers=2)
            self._refill_blanks()
            self._spare_scratch(profile["scratch_root"])
            self._remove_dead_units()  # after the reply: off the caller's path
        elif op == "refill":  # a run ended (no reply): now the pool may take the CPU
            self._refill_ready()
        elif op == "ping":
            self._reply({"ok": True, "pid": self.pid, "workers": len(self.workers)})
        elif op == "shutdown":
            self.shutdown()
        else:
            self._reply({"ok": False, "error": f"unknown op {op!r}"})

    def _profile(self, msg: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
        """The spawn's profile and its key: sent whole the first time (with the supervisor's
        reference for it), then by reference only. None: a reference this zygote never got."""
        ref = msg.get("ref")
        if "profile" in msg:
            profile = msg["profile"]
            entry = (profile, json.dumps(profile, sort_keys=True))
            if ref is not None:
                if len(self.profiles) >= MAX_PROFILES:
                    self.profiles.clear()  # the supervisor sends it whole again (unknown_ref)
                self.profiles[ref] = entry
            return entry
        return self.profiles.get(ref) if isinstance(ref, int) else None

    def _want_ready(self, key: str, profile: dict[str, Any], now: bool = False) -> None:
        """Keep workers ready for ``profile`` (the latest pre-forked one): the pool is refilled
        on the next ``refill`` or after REFILL_IDLE_SECONDS without a request; a profile seen
        for the first time, an empty pool, or after a ``background`` request (the supervisor
        filling its own pool: no run waits) is filled now."""
        if key != self.ready_key:
            for _pid, fds, _scratch in self.ready:  # the worker sees EOF and exits
                for fd in fds:
                    os.close(fd)
            self.ready = []
            self.ready_key, self.ready_profile = key, profile
            self._refill_ready()
        elif now or not self.ready:  # (none left: the next request would wait for a fork)
            self._refill_ready()
        elif len(self.ready) < PREFORK:
            self.refill_due = time.monotonic() + REFILL_IDLE_SECONDS

    def _refill_ready(self) -> None:
        self.refill_due = None
        if self.ready_profile is None:
            return
        while len(self.ready) < PREFORK:
            self.ready.append(self._fork_worker(self.ready_profile, self.ready_key))

    def _reply(self, message: dict[str, Any], fds: list[int] | tuple[int, ...] = ()) -> None:
        data = json.dumps(message).encode()
        if fds:
            socket.send_fds(self.control, [data], list(fds))
        else:
            self.control.send(data)

    # -- children -------------------------------------------------------------------------------
    def _fork_worker(self, profile: dict[str, Any], key: str, blank: bool = True,
                     warm: bool = True) -> tuple[int, list[int], str]:
        """``key``: the profile as sorted JSON (its plan's cache key)."""
        if self.mechanisms["namespaces"]["active"] and self.mechanisms["mounts"]["active"]:
            profile = {**profile, "root_plan": self._root_plan(profile, key)}
        scratch = self._scratch(profile["scratch_root"])
        pid, fds = self._fork_into(profile, scratch, blank, warm)
        if self.scratch_dies_with_child:
            self.scratch[pid] = scratch
        return pid, fds, scratch

    def _fork_into(self, profile: dict[str, Any], scratch: str, blank: bool,
                   warm: bool = True) -> tuple[int, list[int]]:
        # A writable working directory becomes an overlay: its descriptors come back on a socket
        # the worker gets at fork, so such a worker is never a blank (forked before its profile).
        overlay = bool(profile.get("workdir")) and profile["workdir"] in profile["write_paths"]
        # A blank is in its unit already (and, prepared ahead, in its namespaces with its init
        # and worker forked): only tell it the profile, if the profile fits what it prepared.
        fits = not self.ahead or fits_ahead(profile)
        if blank and self.blanks and not overlay and fits:
            pid, ctl, fds = self.blanks.pop(0)
            try:
                with os.fdopen(ctl, "wb") as pipe:
                    pipe.write(json.dumps({"profile": profile, "scratch": scratch,
                                           "warm": warm}).encode())
            except OSError:  # it died before we reaped it: never hand out a dead worker
                for fd in fds:
                    os.close(fd)
            else:
                return pid, fds
        self._prepare_paths(profile)
        if not overlay:
            return self._fork(lambda: self._child(profile, scratch, warm=warm))
        # Datagram-like: the hand-over, then the keeper's renewals, one message each.
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            pid, fds = self._fork(lambda: self._child(profile, scratch, warm=warm),
                                  keep=theirs.fileno())
        finally:
            theirs.close()
        return pid, [*fds, ours.detach()]

    def _prepare_paths(self, profile: dict[str, Any]) -> None:
        if self.mechanisms["landlock"]["active"]:
            from agenticraft.jail.confine import landlock
            landlock.prepare([*profile["read_paths"], *profile["write_paths"],
                              *profile.get("deny_paths", ())])

    def _fork(self, body: Any, keep: int = -1) -> tuple[int, list[int]]:
        """Fork a child with its channel and output pipes in place (and ``keep`` at KEEP_FD);
        it runs ``body``."""
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            try:
                self._child_fds(child_end.fileno(), out_w, err_w, keep)
                body()
            finally:
                os._exit(70)
        child_end.close()
        os.close(out_w)
        os.close(err_w)
        self.workers.add(pid)
        return pid, [parent_end.detach(), out_r, err_r]

    def _refill_blanks(self) -> None:
        if self.unit is None and not self.ahead:  # a blank would save nothing
            return
        while len(self.blanks) < BLANKS:
            ctl_r, ctl_w = os.pipe2(os.O_CLOEXEC)
            measure = self.blanks_made % prefault.RELEARN == 0
            self.blanks_made += 1
            try:
                pid, fds = self._fork(functools.partial(self._blank, measure), keep=ctl_r)
            finally:
                os.close(ctl_r)
            self.blanks.append((pid, ctl_w, fds))

    def _blank(self, measure: bool = False) -> None:  # pragma: no cover - runs in the child
        """Join a unit of our own now and, where every worker gets the same namespaces
        (``ahead``), enter them and fork the PID namespace's init and worker now too
        (``apply.prepare``: this process stays outside as the keeper, the worker goes on here);
        confine for whatever profile arrives later on the pipe at KEEP_FD (EOF: the zygote
        ended or dropped us)."""
        from agenticraft.jail.confine import cgroups
        from agenticraft.jail.confine.apply import prepare
        joined, written = False, None
        name = f"{self.pid}-{os.getpid()}"
        if self.unit is not None:
            with contextlib.suppress(OSError):  # confinement tries again and reports why not
                paths = cgroups.create(self.unit, name)
                cgroups.join(paths)
                joined = True
                if self.ahead and self.unit_guess is not None:
                    cgroups.write_limits(self.unit, paths, **self.unit_guess)
                    written = self.unit_guess
        prepared = None
        if self.ahead:
            try:
                prepared = prepare(self.mechanisms, self.pid, name)
            except Exception as exc:  # e.g. out of namespaces: report it for the profile
                self._fatal(exc)
            if self.blank_plan is not None:  # while waiting: the pages its way will write
                self.blank_plan.begin(measure, KEEP_FD,
                                      memory_mb=(self.unit_guess or {}).get("memory_mb", 0))
        with os.fdopen(KEEP_FD, "rb") as pipe:
            data = pipe.read()
        if not data:
            os._exit(0)
        msg = json.loads(data)
        profile = msg["profile"]
        self._prepare_paths(profile)
        self._child({**profile, "unit_joined": joined, "unit_limits": written}, msg["scratch"],
                    prepared, warm=bool(msg.get("warm", True)))

    def _scratch(self, root: str) -> str:
        """An empty scratch directory under ``root``: the one made ahead, or a new one."""
        made = self.spare_scratch.pop(root, None)
        if made is not None and os.path.isdir(made):
            return made
        return tempfile.mkdtemp(prefix="w-", dir=root)

    def _spare_scratch(self, root: str) -> None:
        """Make the next worker's scratch directory now, after a reply (a mkdir costs 0.1-0.3
        ms). It lies in the scratch root, which goes with the zygote, as its workers' do."""
        if root not in self.spare_scratch:
            with contextlib.suppress(OSError):
                self.spare_scratch[root] = tempfile.mkdtemp(prefix="w-", dir=root)

    def _root_plan(self, profile: dict[str, Any], key: str) -> dict[str, Any]:
        """The private root's plan, computed once per profile (saves each worker ~0.7 ms)."""
        if key not in self.plans:
            from agenticraft.jail.confine import mounts
            if len(self.plans) >= 32:
                self.plans.clear()
            self.plans[key] = mounts.plan(profile)
        return self.plans[key]

    def _child_fds(self, chan: int, out_w: int, err_w: int, keep: int = -1) -> None:
        """Standard streams, the channel at CHILD_FD (and ``keep`` at KEEP_FD); every other
        descriptor of the zygote (its socket, other workers' pipes) closed."""
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        devnull = os.open("/dev/null", os.O_RDONLY)
        if keep >= 0:  # out of the way of the dup2s below
            keep = fcntl.fcntl(keep, fcntl.F_DUPFD_CLOEXEC, KEEP_FD + 1)
        os.dup2(devnull, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        os.dup2(chan, CHILD_FD)
        if keep >= 0:
            os.dup2(keep, KEEP_FD, inheritable=False)
        os.closerange(CHILD_FD + (2 if keep >= 0 else 1), 1 << 16)
        os.set_inheritable(CHILD_FD, False)

    def _child(self, profile: dict[str, Any], scratch: str,
               prepared: dict[str, Any] | None = None, *, warm: bool = True) -> None:
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
            applied = confine(profile, self.mechanisms, expected_parent=self.pid,
                              prepared=prepared)
        except Exception as exc:
            self._fatal(exc)
        if self.blank_plan is not None:  # unmapped before anything of the sandbox runs
            if prepared is not None:
                self.blank_plan.end()
            else:
                self.blank_plan.close()
        from agenticraft.jail.worker import main
        main(CHILD_FD, profile.get("executor", "exec"),
             {"pid": os.getpid(), "applied": applied, "scratch": scratch},
             egress=(profile["egress_socket"], profile["egress_key"])
             if profile.get("egress_socket") else None, warm=warm)

    @staticmethod
    def _fatal(exc: Exception) -> None:  # pragma: no cover - runs in the child
        """Tell the supervisor why this worker could not confine itself, and end."""
        from agenticraft.wire import protocol
        protocol.send(socket.socket(fileno=CHILD_FD),
                      {"ev": "fatal", "error": f"{type(exc).__name__}: {exc}"})
        os._exit(71)

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
                self._drop_blank(pid)
                self.cgroups[f"{self.pid}-{pid}"] = time.monotonic()
                scratch = self.scratch.pop(pid, None)
                if scratch is not None:  # nothing of the sandbox is left to use it
                    shutil.rmtree(scratch, ignore_errors=True)
                died = True
        if died:
            self._kill_orphans()
        self._remove_dead_units()

    def _drop_blank(self, pid: int) -> None:
        for entry in [e for e in self.blanks if e[0] == pid]:  # died while waiting
            self.blanks.remove(entry)
            for fd in (entry[1], *entry[2]):
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _kill_orphans(self) -> None:
        """Processes a dead worker left behind were re-parented to us: kill them."""
        from agenticraft.jail.tree import children, kill_tree
        waiting = {entry[0] for entry in self.ready} | {entry[0] for entry in self.blanks}
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
        return self.unit is None or cgroups.remove(self.unit, name)


def main() -> None:
    control = socket.socket(fileno=int(sys.argv[1]))
    disabled = [d for d in sys.argv[2].split(",") if d] if len(sys.argv) > 2 else []
    extra_preload = [m for m in sys.argv[3].split(",") if m] if len(sys.argv) > 3 else []
    scratch_root = sys.argv[4] if len(sys.argv) > 4 else ""
    stack_room = int(sys.argv[5]) if len(sys.argv) > 5 and sys.argv[5] else 0
    share_pages = len(sys.argv) > 6 and sys.argv[6] == "1"  # see confine/pages.py
    if share_pages:
        from agenticraft.jail.confine import pages
        if pages.fix_layout():
            os.execv(sys.executable, sys.orig_argv)  # the control socket is inherited
    if stack_room:
        from agenticraft.jail.confine import rlimits
        if rlimits.reserve_stack_room(stack_room):
            os.execv(sys.executable, sys.orig_argv)
        import threading
        threading.stack_size(rlimits.THREAD_STACK_BYTES)
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    for name in (*PRELOAD, *extra_preload):
        # A preload only warms the workers up. One that fails to import here is imported (or
        # fails) in the worker instead: e.g. parso (via jedi) needs a home directory at import,
        # which the zygote lacks when a container runs it as a uid without a passwd entry
        # (Enterprise Gateway's default KERNEL_UID, OpenShift); a worker has HOME.
        try:
            __import__(name)
        except ImportError:
            pass
        except Exception as exc:
            print(f"agenticraft zygote: not preloading {name} ({type(exc).__name__}: {exc})",
                  file=sys.stderr)
    from agenticraft.jail import (
        tree,  # noqa: F401
        worker,  # noqa: F401
    )
    from agenticraft.jail.confine import apply, landlock, mounts, namespaces, seccomp  # noqa: F401
    if share_pages:  # after the preloads: their pages are the ones worth merging
        refused = pages.merge()
        if refused:
            print(f"agenticraft zygote: pages not shared: {refused}", file=sys.stderr)
    zygote = Zygote(control, disabled, scratch_root)
    signal.signal(signal.SIGTERM, zygote.shutdown)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    zygote.serve()


if __name__ == "__main__":
    main()
