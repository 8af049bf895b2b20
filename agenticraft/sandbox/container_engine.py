"""The container engine as the container sandbox uses it: connecting (Docker Engine, or Podman's
Docker-compatible socket, through the Docker SDK for Python), the labels that mark our
containers, and the reaper that removes the containers of processes that are gone.

Every container we create carries ``LABEL`` plus the owner's identity (boot id, pid, process
start time): a container whose owner no longer runs on this machine is a leftover.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agenticraft.wire.errors import SandboxUnavailable

LABEL = "org.agenticraft.sandbox"
OWNER_LABEL = "org.agenticraft.owner"      # "<boot id>:<pid>:<start time>"
HOSTDIR_LABEL = "org.agenticraft.hostdir"  # the host directory bind-mounted into it
HOSTDIR_PREFIX = "agenticraft-ctr-"
KIND = "container"

START_HINT = ("start Docker Engine (`sudo systemctl start docker`, or as root `dockerd &`), or "
              "point DOCKER_HOST at Podman's Docker-compatible socket (`systemctl --user start "
              "podman.socket`; DOCKER_HOST=unix://$XDG_RUNTIME_DIR/podman/podman.sock)")


def _engine_address() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def connect(timeout: float = 60) -> Any:
    """A Docker SDK client talking to a running engine, or ``SandboxUnavailable`` saying what
    is missing and how to get it."""
    try:
        import docker
    except ImportError:
        raise SandboxUnavailable(
            KIND, ["the Docker SDK for Python (the `docker` package)"],
            "Install it: pip install 'agenticraft-secure[container]'.") from None
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except Exception as exc:  # the SDK raises DockerException, requests' errors, OSError...
        raise SandboxUnavailable(
            KIND, [f"a running container engine at {_engine_address()} ({_first_line(exc)})"],
            f"To use sandbox_type='container', {START_HINT}.") from None
    return client


def probe() -> list[str]:
    """What this host visibly lacks for the container sandbox, cheaply (every manager probes
    at start-up): the SDK, and for a local engine its socket. Whether the engine answers is
    checked when the sandbox starts (``connect``)."""
    import importlib.util
    missing = []
    if importlib.util.find_spec("docker") is None:
        missing.append("the Docker SDK for Python (pip install 'agenticraft-secure[container]')")
    address = _engine_address()
    if address.startswith("unix://") and not os.path.exists(address[len("unix://"):]):
        missing.append(f"a running container engine (no socket {address[len('unix://'):]}; "
                       f"{START_HINT})")
    return missing


def is_podman(client: Any) -> bool:
    """Podman's Docker-compatible API (it differs in a detail or two, e.g. seccomp profiles)."""
    try:
        components = client.version().get("Components") or []
    except Exception:
        return False
    return any("podman" in str(c.get("Name", "")).lower() for c in components)


def require_image(client: Any, image: str) -> dict[str, Any]:
    """The image's attributes, or ``SandboxUnavailable`` naming the script that builds it."""
    import docker.errors
    try:
        return client.images.get(image).attrs
    except docker.errors.ImageNotFound:
        raise SandboxUnavailable(
            KIND, [f"the container image {image!r}"],
            "Build the default image with scripts/build-container-image.sh (no registry needed), "
            "or set `image` in the policy/config to an image that has Python 3.11+ and this "
            "package in /opt/agenticraft (docs/container.md).") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


# -- who owns a container --------------------------------------------------------------------
def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()[19]  # field 22: start time in clock ticks


def owner_id(pid: int | None = None) -> str:
    """This process's identity on this machine (a recycled pid does not match it)."""
    pid = os.getpid() if pid is None else pid
    return f"{_boot_id()}:{pid}:{_start_time(pid)}"


def owner_alive(owner: str) -> bool | None:
    """Whether the owner runs; None when it is another machine's (we cannot tell)."""
    boot, _, rest = owner.partition(":")
    pid_text, _, started = rest.partition(":")
    if boot != _boot_id() or not pid_text.isdigit():
        return None
    return _start_time(int(pid_text)) == started


def labels(hostdir: str) -> dict[str, str]:
    return {LABEL: "1", OWNER_LABEL: owner_id(), HOSTDIR_LABEL: hostdir}


def ours(client: Any) -> list[Any]:
    """Every container of this package the engine knows, running or not. (The engine lists
    them, then each is inspected: one removed in between, as another sandbox closes, is left
    out instead of failing the whole listing.)"""
    return client.containers.list(all=True, filters={"label": LABEL}, ignore_removed=True)


def remove(container: Any) -> None:
    """Remove ``container`` (force), which its engine's auto-remove may be removing already:
    Docker then answers "already in progress"; Podman, "container state improper" when it
    stopped between the two (removing it again then succeeds, or finds it gone)."""
    import docker.errors
    for attempt in range(3):
        try:
            container.remove(force=True)
            return
        except docker.errors.NotFound:
            return  # auto-removed already
        except docker.errors.APIError as exc:
            if "already in progress" in str(exc):
                return
            if "state improper" not in str(exc) or attempt == 2:
                raise


def reap(client: Any, *, owners: Iterable[str] | None = None) -> list[str]:
    """Remove our containers whose owner process is gone (or, with ``owners``, those owned by
    one of them) and their host directories. Returns the names removed."""
    wanted = set(owners) if owners is not None else None
    removed = []
    for container in ours(client):
        owner = container.labels.get(OWNER_LABEL, "")
        if wanted is not None:
            if owner not in wanted:
                continue
        elif owner_alive(owner) is not False:
            continue
        with contextlib.suppress(Exception):  # already gone
            remove(container)
            removed.append(container.name)
        remove_hostdir(container.labels.get(HOSTDIR_LABEL, ""))
    return removed


def claim_hostdir(path: str) -> None:
    """Mark a host directory with its owner, so that the reaper can find it after a crash
    (the container itself removes itself when its zygote sees the owner gone)."""
    Path(path, "owner").write_text(owner_id())


def reap_hostdirs(root: str | None = None) -> list[str]:
    """Remove the host directories of owners that are gone."""
    import tempfile
    removed = []
    for path in Path(root or tempfile.gettempdir()).glob(HOSTDIR_PREFIX + "*"):
        try:
            owner = (path / "owner").read_text()
        except OSError:
            continue
        if owner_alive(owner) is False:
            remove_hostdir(str(path))
            removed.append(str(path))
    return removed


def remove_hostdir(path: str) -> None:
    """Remove a host directory we bind-mounted (only ever one of ours, by its name)."""
    if path and Path(path).name.startswith(HOSTDIR_PREFIX) and os.path.isabs(path):
        shutil.rmtree(path, ignore_errors=True)
