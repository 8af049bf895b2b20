"""Helpers shared by the test modules (importing this module imports no engine code, so static
tests such as test_boundary.py run even while the engine cannot be imported)."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agenticraft.sandbox import SandboxManager
    from agenticraft.security.policy import Policy


def make_manager(tmp: Path, policy: Policy | None = None, **kwargs) -> SandboxManager:
    """A manager with its audit log and working directory under ``tmp``."""
    from agenticraft.sandbox import SandboxManager
    from agenticraft.security.config import Settings
    from agenticraft.security.policy import Policy

    return SandboxManager(policy=policy or Policy(), settings=Settings(audit_log_path=tmp / "a"),
                          audit_log=tmp / "audit.jsonl", working_dir=tmp, **kwargs)


def audit_records(manager: SandboxManager, kind: str | None = None,
                  **match: Any) -> list[dict[str, Any]]:
    """The manager's audit records of type ``kind`` whose fields equal ``match``."""
    return [r for r in manager.audit.query(event_type=kind)
            if all(r.get(k) == v for k, v in match.items())]


def parent_of(pid: int) -> int:
    """The parent pid, from /proc (works for processes that are not our children)."""
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[1])


@contextlib.contextmanager
def tcp_listener() -> Iterator[tuple[socket.socket, int]]:
    """A listening TCP socket on 127.0.0.1 and its port: what sandboxed code must not reach."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield listener, listener.getsockname()[1]


def is_gone(pid: int) -> bool:
    """Dead or a zombie waiting to be reaped."""
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def name_me(marker: str) -> str:
    """Sandbox code that names its process ``marker`` (its ``/proc/<pid>/comm``, which the host
    reads): inside a PID namespace the sandbox's own pid numbers mean nothing outside."""
    return (f"import ctypes as _c\n"
            f"assert _c.CDLL(None).prctl(15, {marker[:15]!r}.encode(), 0, 0, 0) == 0\n")


def named(marker: str) -> list[int]:
    """Host pids of live (not zombie) processes named ``marker`` (see ``name_me``)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as fh:
                    if fh.read().strip() == marker[:15] and not is_gone(int(entry)):
                        found.append(int(entry))
            except OSError:
                continue
    return found


def wait_named_gone(marker: str, timeout: float = 10.0) -> bool:
    """Wait until no process named ``marker`` is left."""
    deadline = time.monotonic() + timeout
    while named(marker):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    """Wait until ``pid`` is dead or a zombie (a zombie whose parent does not reap it, say a
    stopped subreaper, would otherwise hold a plain wait for the whole timeout)."""
    deadline = time.monotonic() + timeout
    while not is_gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def wait_path_gone(path: str, timeout: float = 10.0) -> bool:
    """Wait until ``path`` no longer exists (removed by another process: the zygote removes a
    sandbox's scratch directory once it has reaped the sandbox)."""
    deadline = time.monotonic() + timeout
    while os.path.lexists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


RUNNING_AS_ROOT = os.geteuid() == 0

#: The first-party packages code inside the sandbox may import (plus the bare packages
#: ``agenticraft`` and ``agenticraft_kernel``, whose ``__init__`` imports nothing first-party).
SANDBOX_SIDE_PACKAGES = ("agenticraft.jail", "agenticraft.wire", "agenticraft_kernel.worker")
FIRST_PARTY = ("agenticraft", "agenticraft_kernel")


def within(name: str, packages: Iterable[str]) -> bool:
    """``name`` is one of ``packages`` or a module inside one of them."""
    return any(name == p or name.startswith(p + ".") for p in packages)


def host_modules(loaded: Iterable[str]) -> list[str]:
    """The first-party modules in ``loaded`` that are host code (none may be loaded in a worker)."""
    return sorted(name for name in loaded if within(name.split(".")[0], FIRST_PARTY)
                  and name not in FIRST_PARTY and not within(name, SANDBOX_SIDE_PACKAGES))


def assert_sandbox_side_only(loaded: Iterable[str]) -> None:
    """Fail naming every host module in ``loaded`` (a worker's ``sys.modules``)."""
    hosts = host_modules(loaded)
    assert not hosts, f"host modules loaded inside the worker: {', '.join(hosts)}"


def plain_ulimits(client) -> list:
    """The sandbox's rlimits, for the tests' own containers (Podman's defaults fail to start
    where root lacks CAP_SYS_RESOURCE)."""
    from agenticraft.sandbox.container import ulimits
    from agenticraft.sandbox.container_engine import is_podman
    return ulimits(is_podman(client))
