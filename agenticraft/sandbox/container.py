"""ContainerSandbox: the process sandbox's zygote, running in a warm container per profile.

One container per profile (image, user, container limits, working directory): Docker's init
as PID 1 and our zygote under it, connected to the host through a unix socket in a
bind-mounted directory (see :mod:`agenticraft.jail.container_entry` for why a socket). An
execution is then a fork inside the running container, and everything after the fork is the
process sandbox's own machinery (supervisor, watchdog, sessions with rollback), reused: the
supervisor only needs the host pids of the container's processes (:meth:`host_pid`).

Container-level limits come from the resolved ``SecurityContext``: memory and CPU ceilings,
a pids ceiling, read-only root with size-limited tmpfs, every capability dropped,
no-new-privileges, the project's seccomp profile and a non-root user. The network means what it
means in the process sandbox: False, no network (network_mode none); an allow-list, no network
either, and the host's egress proxy, whose socket alone is bound into the container (the egress
shim inside relays the container's loopback to it); True, the host's network (network_mode
host: an engine's own networks are not the host's, and there may be none).
Inside, the zygote applies whatever of its own confinement the container allows, and reports
which (the ``enforced`` map says both).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import os
import resource
import socket
import struct
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from agenticraft.jail.tree import children
from agenticraft.sandbox import container_engine as engine
from agenticraft.sandbox import host_report as host_probe
from agenticraft.sandbox.egress.pool import EgressPool
from agenticraft.sandbox.process import ProcessSandbox
from agenticraft.sandbox.profile import SYSTEM_READ_PATHS
from agenticraft.sandbox.supervisor import Supervisor
from agenticraft.sandbox.types import SandboxType
from agenticraft.sandbox.workers import LAUNCHER, ZygoteProcess
from agenticraft.security.context import SecurityContext
from agenticraft.security.policy import default_container_image
from agenticraft.wire.errors import SandboxError, SandboxUnavailable
from agenticraft.wire.network import NetworkAccess

#: Where the image keeps this package and its dependencies (first on the zygote's sys.path).
IMAGE_PACKAGE_ROOT = "/opt/agenticraft"
#: The user the sandbox runs as when the host runs as root (the image's "sandbox" user).
CONTAINER_UID = 10001
IMAGE_NEEDS = (f"The image needs python3 (3.11) on PATH and this package with its dependencies "
               f"in {IMAGE_PACKAGE_ROOT} (docs/container.md).")
SECCOMP_PROFILE = Path(__file__).with_name("container_seccomp.json")
#: Room above the run's own memory limit for the zygote and its pre-forked workers.
MEMORY_HEADROOM_MB = 128
#: Processes of the container itself (init, zygote, pre-forked workers, a session's checkpoint).
PIDS_HEADROOM = 16
TMPFS_MB = 64
#: Open files per process in the container (the zygote and workers need a few dozen).
NOFILE = 4096
#: RLIMIT_NPROC of Podman's containers (per uid, not per container: the pids ceiling bounds a
#: container). Podman 4.3's own service ran with 32768 here; an engine cannot go above its own.
PODMAN_NPROC = 32768




#: ``nproc_baseline`` of a container's workers (see ``profile_for``): RLIMIT_NPROC then stays
#: at the container's own limit (``ulimits``) unless the worker has its own user namespace.
UNCOUNTED_NPROC = 1 << 22


def ulimits(podman: bool) -> list[Any]:
    """The rlimits every container gets (the Docker SDK's ``ulimits``)."""
    from docker.types import Ulimit
    limits = [Ulimit(name="nofile", soft=NOFILE, hard=NOFILE)]
    if podman:
        # Podman (as root) sets RLIMIT_NOFILE and RLIMIT_NPROC to 1048576 unless told; its
        # runtime cannot raise them above its own without CAP_SYS_RESOURCE, which root lacks
        # where the host is itself a container: every start failed with EPERM. (Docker keeps
        # its daemon's.)
        nproc = min([PODMAN_NPROC, *(v for v in resource.getrlimit(resource.RLIMIT_NPROC)
                                     if v != resource.RLIM_INFINITY)])
        limits.append(Ulimit(name="nproc", soft=nproc, hard=nproc))
    return limits


def _check_enterable(workdir: str, uid: int, gid: int) -> None:
    """The container's user must be able to enter the mounted working directory; otherwise every
    worker would die in ``chdir`` before it could say why."""
    info = os.stat(workdir)
    bit = (0o100 if uid == info.st_uid else 0o010 if gid == info.st_gid else 0o001)
    if not info.st_mode & bit:
        raise SandboxError(
            f"the container sandbox cannot use the working directory {workdir}: it belongs to "
            f"uid {info.st_uid} with mode {info.st_mode & 0o777:04o}, and the container's user "
            f"(uid {uid}) may not enter it. Let it in (chmod o+x {workdir}) or run without "
            "filesystem access (filesystem_access=False, %%secure --no-filesystem).")


@dataclasses.dataclass(frozen=True)
class ContainerSpec:
    """Everything that makes two containers different: one warm container per spec (per user
    and limits)."""

    image: str
    user_id: str  # whose: users never share a container (nor its pid namespace and uid)
    user: str
    memory_mb: int
    nano_cpus: int
    pids: int
    network: NetworkAccess  # False, True or the allow-list (a tuple)
    tmpfs_mb: int
    workdir: str | None
    workdir_writable: bool
    seccomp: str  # "project" (the shipped profile) or "default" (the engine's)

    @classmethod
    def for_context(cls, ctx: SecurityContext, image: str, seccomp: str = "project"
                    ) -> ContainerSpec:
        limits = ctx.resource_limits
        workdir = None
        if limits.filesystem_access and ctx.working_dir:
            workdir = str(Path(ctx.working_dir).resolve())
        uid, gid = os.geteuid(), os.getegid()  # a user's own engine: the user's own ids
        if uid == 0:
            # as root: the image's unprivileged user; with a host directory mounted, its
            # owner (the files are theirs), unless that is root: never uid 0 in the container
            # (nor could it map itself into a user namespace without CAP_SETFCAP)
            uid = gid = CONTAINER_UID
            if workdir:
                info = os.stat(workdir)
                if info.st_uid != 0:
                    uid, gid = info.st_uid, info.st_gid
        if workdir:
            _check_enterable(workdir, uid, gid)
        return cls(image=ctx.image or image, user_id=ctx.user_id, user=f"{uid}:{gid}",
                   memory_mb=int(limits.memory_mb) + MEMORY_HEADROOM_MB,
                   nano_cpus=max(10_000_000, int(limits.cpu_percent / 100 * 1e9)),
                   pids=int(limits.max_processes) + PIDS_HEADROOM,
                   network=limits.network_access,
                   tmpfs_mb=max(TMPFS_MB, int(limits.max_file_size_mb) * 2),
                   workdir=workdir,
                   workdir_writable=bool(workdir) and ctx.has_permission("write"),
                   seccomp=seccomp)

    @property
    def uid(self) -> int:
        return int(self.user.split(":")[0])

    def create_kwargs(self, hostdir: str, command: list[str], *, podman: bool = False,
                      egress_socket: str | None = None) -> dict[str, Any]:
        """The Docker API arguments of this container. ``egress_socket``: the host egress
        proxy's socket of an allow-list, bound read-only at the same path (the socket alone:
        its 0700 directory belongs to the host's user, the container's may be another)."""
        security = ["no-new-privileges:true"]
        if self.seccomp == "project":
            # Docker's API takes the profile itself; Podman's compatible API, a file path
            security.append("seccomp=" + (str(SECCOMP_PROFILE) if podman
                                          else SECCOMP_PROFILE.read_text()))
        mounts = [{"Type": "bind", "Source": hostdir, "Target": hostdir, "ReadOnly": False}]
        if self.workdir:
            mounts.append({"Type": "bind", "Source": self.workdir, "Target": self.workdir,
                           "ReadOnly": not self.workdir_writable})
        if egress_socket:
            mounts.append({"Type": "bind", "Source": egress_socket, "Target": egress_socket,
                           "ReadOnly": True})
        from docker.types import Mount
        tmpfs = {"/tmp": f"rw,nosuid,nodev,size={self.tmpfs_mb}m,mode=1777",
                 "/dev/shm": f"rw,nosuid,nodev,size={self.tmpfs_mb}m"}
        if podman:
            # Podman adds unbounded tmpfs on /run and /var/tmp to a read-only container, unless
            # something is mounted there already: bounded ones instead
            tmpfs["/var/tmp"] = tmpfs["/tmp"]
            tmpfs["/run"] = "rw,nosuid,nodev,size=1m"
        return {
            "image": self.image, "command": command, "user": self.user,
            "detach": True, "auto_remove": True, "init": True,
            "network_mode": "host" if self.network is True else "none",
            "mem_limit": f"{self.memory_mb}m", "memswap_limit": f"{self.memory_mb}m",
            "nano_cpus": self.nano_cpus, "pids_limit": self.pids,
            "read_only": True,
            "tmpfs": tmpfs,
            "cap_drop": ["ALL"], "security_opt": security,
            "ulimits": ulimits(podman),
            "mounts": [Mount(m["Target"], m["Source"], type="bind", read_only=m["ReadOnly"])
                       for m in mounts],
            "environment": {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"},
            "working_dir": "/tmp", "labels": engine.labels(hostdir),
            "name": f"agenticraft-{os.getpid()}-{os.urandom(4).hex()}",
        }

    def report(self) -> dict[str, str]:
        """The container-level part of the ``enforced`` map."""
        mode = "read-write" if self.workdir_writable else "read-only"
        return {
            "memory_mb": f"container memory ceiling {self.memory_mb} MB (cgroup, no swap)",
            "cpu_percent": f"container CPU quota {self.nano_cpus / 1e9:g} CPUs",
            "max_processes": f"container pids ceiling {self.pids}",
            "max_file_size_mb": f"read-only root; {self.tmpfs_mb} MB tmpfs /tmp",
            "network_access": host_probe.container_network(self.network),
            "filesystem_access": (f"only {self.workdir} ({mode}) of the host is mounted"
                                  if self.workdir
                                  else "no host directory is mounted (image root read-only)"),
        }


class _ContainerProc:
    """Stands in for the zygote's ``Popen``: alive while its host pid is."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def poll(self) -> int | None:
        try:
            with open(f"/proc/{self.pid}/stat") as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            return 0
        return 0 if state in ("Z", "X") else None


class ContainerZygote(ZygoteProcess):
    """The zygote in a container: started with ``docker run``, reached by a unix socket."""

    def __init__(self, client: Any, spec: ContainerSpec, disabled: frozenset[str],
                 preload: tuple[str, ...] = (), egress_socket: str | None = None) -> None:
        self.client = client
        self.spec = spec
        self.egress_socket = egress_socket  # the proxy's socket of the spec's allow-list
        self.hostdir = tempfile.mkdtemp(prefix=engine.HOSTDIR_PREFIX)
        engine.claim_hostdir(self.hostdir)
        super().__init__(disabled, preload)
        # scratch directories live in the bind-mounted host directory, at the same path on
        # both sides: the host's watchdog measures them and removes them after each worker
        os.rmdir(self.scratch_root)
        self.scratch_root = os.path.join(self.hostdir, "scratch")
        os.mkdir(self.scratch_root, 0o700)
        self.container: Any = None
        self.ns_index = 1
        self.started_in = 0.0

    def start(self) -> None:
        started = time.perf_counter()
        uid, gid = (int(part) for part in self.spec.user.split(":"))
        os.chmod(self.hostdir, 0o711)
        # the socket lives in a directory only the container's user (and root) may enter, so
        # no other local user can connect first and pose as the zygote
        rundir = os.path.join(self.hostdir, "run")
        os.makedirs(rundir, mode=0o700, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(self.scratch_root, uid, gid)
            os.chown(rundir, uid, gid)
        path = os.path.join(rundir, "zygote.sock")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a previous zygote's (this zygote is being restarted)
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as listener:
            listener.bind(path)
            os.chmod(path, 0o666)
            listener.listen(1)
            code = ("import sys; sys.path.insert(0, sys.argv.pop(1)); "
                    "from agenticraft.jail.container_entry import main; main()")
            command = ["python3", "-I", "-c", code, IMAGE_PACKAGE_ROOT, path,
                       ",".join(sorted(self.disabled)), ",".join(self.preload)]
            try:
                self.container = self.client.containers.run(**self.spec.create_kwargs(
                    self.hostdir, command, podman=engine.is_podman(self.client),
                    egress_socket=self.egress_socket))
            except Exception as exc:
                raise SandboxUnavailable(engine.KIND, [
                    f"a container from {self.spec.image!r} ({engine._first_line(exc)})"],
                    IMAGE_NEEDS) from None
            self.sock = self._accept(listener)
        os.unlink(path)
        creds = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        peer, peer_uid, _gid = struct.unpack("3i", creds)
        if peer_uid != uid or not self._in_container(peer):
            self.sock.close()
            self.sock = None
            raise SandboxError(f"the zygote socket was answered by a process outside the "
                               f"container (pid {peer}, uid {peer_uid})")
        self.proc = _ContainerProc(peer)  # type: ignore[assignment]
        hello, _ = self._recv(timeout=30)
        if hello.get("ev") != "hello":
            raise SandboxUnavailable(engine.KIND, [f"the zygote in the container: {hello}"])
        self._greeted(hello)
        self.ns_index = len(self._nspids(self.proc.pid)) - 1
        self.started_in = time.perf_counter() - started

    def _accept(self, listener: socket.socket) -> socket.socket:
        """The zygote's connection; if the container exits first, say why (its output)."""
        deadline = time.monotonic() + 60
        listener.settimeout(0.05)
        while time.monotonic() < deadline:
            try:
                conn, _ = listener.accept()
                conn.settimeout(None)
                return conn
            except TimeoutError:
                pass
            import docker.errors
            try:
                self.container.reload()
                if self.container.status not in ("exited", "dead"):
                    continue
                logs = self.container.logs().decode(errors="replace").strip()[-800:]
            except docker.errors.APIError:  # exited and already (being) removed: auto-remove
                logs = "it exited at once: no python3 in the image, or it could not start"
            raise SandboxUnavailable(engine.KIND, [
                f"a zygote in {self.spec.image!r}: the container exited ({logs})"], IMAGE_NEEDS)
        raise SandboxUnavailable(engine.KIND, ["a container that starts within 60 s"])

    def _in_container(self, pid: int) -> bool:
        """Whether ``pid`` runs in our container's pid namespace (when this process may see
        namespaces: as root, or the same user as the container's processes)."""
        try:
            self.container.reload()
            init = int(self.container.attrs["State"]["Pid"])
            return os.readlink(f"/proc/{pid}/ns/pid") == os.readlink(f"/proc/{init}/ns/pid")
        except PermissionError:
            return True  # not ours to inspect (a rootless engine): the uid check stands
        except (OSError, KeyError, ValueError):
            return False

    @staticmethod
    def _nspids(pid: int) -> list[int]:
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("NSpid:"):
                        return [int(p) for p in line.split()[1:]]
        except OSError:
            pass
        return []

    def host_pid(self, pid: int) -> int:
        """The host pid of the zygote's descendant ``pid`` (a container-namespace pid), or -1.
        Only the zygote's own process tree is searched: a pid the sandbox names can never
        resolve to a process outside it."""
        if self.proc is None:
            return -1
        stack = [self.proc.pid]
        while stack:
            for child in children(stack.pop()):
                ns = self._nspids(child)
                if len(ns) > self.ns_index and ns[self.ns_index] == pid:
                    return child
                stack.append(child)
        return -1

    def _stop(self) -> None:
        if self.sock is not None:
            self.sock.close()  # the zygote sees EOF and exits; so does its container
            self.sock = None
        self.proc = None
        if self.container is not None:
            engine.remove(self.container)
            self.container = None
        engine.remove_hostdir(self.hostdir)


class ContainerSandbox(ProcessSandbox):
    """Runs code in a warm container per profile; executions and sessions as in the process
    sandbox (a fork of the zygote inside the container)."""

    sandbox_type = SandboxType.CONTAINER
    # an allow-list's container has network_mode none: its namespace is the private one when
    # the workers cannot make their own (the engine's default seccomp refuses user namespaces)
    isolated_by = "the container's network namespace (network_mode none)"

    def __init__(self, manager: Any, *, image: str | None = None,
                 seccomp: str = "project") -> None:
        self.manager = manager
        settings = getattr(manager, "settings", None)
        policy = getattr(manager, "policy", None)
        # used for contexts that name no image (resolved contexts always do)
        self.image = (image or getattr(settings, "container_image", None)
                      or getattr(policy, "container_image", None) or default_container_image())
        self.seccomp = seccomp
        self.disabled = host_probe.disabled_from_env()
        self.preload = tuple(getattr(manager, "process_preload", ()))
        # Allow-listed network: the same host-side proxies as the process sandbox's, one per
        # (list, user); each allow-list container gets its proxy's socket bound in.
        self.egress = EgressPool(manager.audit.record, getattr(manager, "egress_resolver", None))
        self.client: Any = None
        self.supervisors: dict[ContainerSpec, Supervisor] = {}
        self._starting: dict[ContainerSpec, concurrent.futures.Future[None]] = {}
        self._tlock = threading.Lock()  # guards the two dicts only; never held across an await
        self._started = False
        self._profiles: dict[tuple[Any, ...], tuple[Any, Any, dict[str, Any]]] = {}  # (process)

    @classmethod
    def probe(cls) -> list[str]:
        return engine.probe()

    @property
    def supervisor(self) -> Supervisor:  # type: ignore[override]
        """The most recently started container's supervisor (what ``doctor`` shows)."""
        if not self.supervisors:
            raise SandboxError("no container is running yet")
        return next(reversed(self.supervisors.values()))

    async def start(self) -> None:
        if not self._started:
            loop = asyncio.get_running_loop()
            self.client = await loop.run_in_executor(None, engine.connect)
            await loop.run_in_executor(None, engine.require_image, self.client, self.image)
            await loop.run_in_executor(None, engine.reap, self.client)
            await loop.run_in_executor(None, engine.reap_hostdirs)
            self._started = True

    async def close(self) -> None:
        with self._tlock:
            supervisors, self.supervisors = list(self.supervisors.values()), {}
            self._starting = {}
        for supervisor in supervisors:
            await asyncio.get_running_loop().run_in_executor(None, supervisor.close)
        if self.client is not None:
            self.client.close()
            self.client = None
        self.egress.close()
        self._started = False

    def spec_for(self, ctx: SecurityContext) -> ContainerSpec:
        return ContainerSpec.for_context(ctx, self.image, self.seccomp)

    async def supervisor_for(self, ctx: SecurityContext) -> Supervisor:
        """The warm container of ``ctx``'s profile, started on first use. Callers asking for
        the same profile meanwhile wait for the same start (a future of the launcher thread,
        awaitable from any event loop)."""
        await self.start()
        spec = self.spec_for(ctx)
        proxy = self.egress.proxy_for(ctx)  # running before its container: its socket is bound
        with self._tlock:
            supervisor = self.supervisors.get(spec)
            starting = self._starting.get(spec)
            dead = starting is not None and starting.done() and (
                starting.exception() is not None or supervisor is None
                or supervisor.zygote.proc is None or supervisor.zygote.proc.poll() is not None)
            if supervisor is None or starting is None or dead:
                old = supervisor
                zygote = ContainerZygote(self.client, spec, self.disabled, self.preload,
                                         proxy.socket_path if proxy is not None else None)
                supervisor = self.supervisors[spec] = Supervisor(self.disabled, self.preload,
                                                                 zygote=zygote)
                starting = self._starting[spec] = LAUNCHER.submit(supervisor.start)
                if old is not None:
                    LAUNCHER.submit(old.close)
        try:
            await asyncio.wrap_future(starting)
        except BaseException:
            with self._tlock:
                if self.supervisors.get(spec) is supervisor:
                    del self.supervisors[spec]
                    del self._starting[spec]
            LAUNCHER.submit(supervisor.close)
            raise
        return supervisor

    def profile_for(self, ctx: SecurityContext, executor: str | None = None,
                    supervisor: Supervisor | None = None) -> dict[str, Any]:
        profile = super().profile_for(ctx, executor, supervisor)
        # the container's own paths, not the host's (its interpreter is the image's)
        own = {profile.get("workdir"), profile.get("egress_socket") and os.path.dirname(
            profile["egress_socket"])}  # what the container has of the host: bound in
        profile["read_paths"] = sorted({*SYSTEM_READ_PATHS, IMAGE_PACKAGE_ROOT,
                                        *(p for p in profile["read_paths"] if p in own)})
        # Of the host's protected paths (audit log, policy, secrets), only those under what is
        # bound in (the working directory) exist in the container: they stay protected.
        profile["deny_paths"] = [p for p in profile["deny_paths"] if any(
            o and (p == o or p.startswith(o.rstrip("/") + "/")) for o in own)]
        # Without a user namespace of its own (the engine's default seccomp profile refuses
        # one), RLIMIT_NPROC counts every process of the container's uid on the host, those
        # of other containers and idle workers included: a per-run bound of max_processes
        # would refuse a new worker its own threads. There the container's pids ceiling bounds
        # the processes (what the report says); the rlimit stays at the container's own.
        profile["nproc_baseline"] = UNCOUNTED_NPROC
        return profile

    def host_report(self) -> dict[str, str]:
        return self.report_for(self.supervisor.zygote.spec)  # type: ignore[attr-defined]

    def report_for(self, spec: ContainerSpec) -> dict[str, str]:
        supervisor = self.supervisors.get(spec)
        inner = host_probe.limit_enforcement(supervisor.mechanisms, euid=spec.uid) if (
            supervisor is not None) else {}
        if supervisor is not None:
            inner["network_access"] = host_probe.network_enforcement(
                spec.network, supervisor.mechanisms, isolated_by=self.isolated_by)
        outer = spec.report()
        return {limit: (f"{outer[limit]}; inside: {how}" if limit in outer else how)
                for limit, how in inner.items()}

    def enforced_for(self, ctx: SecurityContext) -> dict[str, str]:
        return self.report_for(self.spec_for(ctx))

    def doctor(self) -> dict[str, Any]:
        """What each running container enforces, as the zygote inside it found it."""
        return {json.dumps(dataclasses.asdict(spec)): {
            "mechanisms": sup.mechanisms, "limits": self.report_for(spec),
            "container": getattr(sup.zygote.container, "name", None)}
            for spec, sup in self.supervisors.items()}


__all__ = ["ContainerSandbox", "ContainerSpec", "ContainerZygote"]
