"""From a resolved SecurityContext to the confinement profile a worker applies to itself.

This module decides which paths a sandboxed process may read and write. Keep every such
decision here.
"""

from __future__ import annotations

import contextlib
import functools
import os
import site
import sys
import sysconfig
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agenticraft.security.context import SecurityContext

#: System locations Python and its extension modules need (read and execute only).
SYSTEM_READ_PATHS = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/etc/ld.so.cache",
                     "/etc/localtime", "/etc/mime.types", "/dev/null", "/dev/zero",
                     "/dev/urandom", "/dev/random", "/proc/cpuinfo", "/proc/meminfo",
                     "/sys/devices/system/cpu")
#: The directory ``agenticraft`` is imported from (the zygote puts it first on its sys.path).
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
#: What name resolution and TLS need, granted only together with network access.
NETWORK_READ_PATHS = ("/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/ssl",
                      "/etc/ca-certificates", "/etc/gai.conf", "/etc/host.conf",
                      # pip's User-Agent names the distribution (and fails if it cannot read it)
                      "/etc/os-release", "/etc/debian_version", "/etc/lsb-release")
WRITE_DEVICES = ("/dev/null",)


@functools.lru_cache(maxsize=1)
def python_paths() -> tuple[str, ...]:
    """The interpreter, its standard library, the environment's site-packages (with what their
    ``.pth`` files add inside the environment) and the package itself. Not the host's other
    ``sys.path`` entries: the directory of the host's own script (``/srv/app`` of
    ``python /srv/app/server.py``) or ``PYTHONPATH`` hold the host's code and secrets."""
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    paths = {*prefixes, os.path.dirname(os.path.realpath(sys.executable))}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        with contextlib.suppress(KeyError):
            paths.add(sysconfig.get_path(key))
    with contextlib.suppress(AttributeError):
        paths.update(site.getsitepackages())
    inside = [os.path.realpath(p) for p in prefixes if p]
    paths.update(p for p in sys.path if p and os.path.isabs(p)
                 and any(_below(os.path.realpath(p), base) for base in inside))
    paths.add(PACKAGE_ROOT)
    # (and its packages by name: where PACKAGE_ROOT is a checkout, not site-packages, and a
    # writable working directory holds it, these are what must stay read-only; see host_code_paths)
    paths.update(os.path.join(PACKAGE_ROOT, name) for name in ("agenticraft", "agenticraft_kernel"))
    return tuple(sorted(p for p in paths if p and os.path.exists(p)))


@functools.lru_cache(maxsize=1)
def host_code_paths() -> tuple[str, ...]:
    """The host's own Python (``python_paths``), resolved: never changed from a sandbox, even
    inside a writable working directory (a ``.pth`` file there runs in the host's next Python,
    outside any sandbox). Mounted read-only inside (``mounts.plan``'s pins) and never copied
    back by a working directory's write-back (``writeback.Overlay.protected``)."""
    paths = {*python_paths(), *(p for p in sys.path if p and os.path.isabs(p))}
    with contextlib.suppress(AttributeError):  # pip install --user: its .pth files run too
        paths.add(site.getusersitepackages())
    return tuple(sorted({os.path.realpath(p) for p in paths if os.path.exists(p)}))


def check_host_code(profile: dict[str, Any], mechanisms: dict[str, Any], sandbox_type: str,
                    ) -> None:
    """Refuse a writable working directory that holds the host's own Python where no private
    root can keep that read-only inside it (Landlock only adds rights): raises
    SandboxUnavailable saying why and what to do."""
    workdir = profile.get("workdir")
    if not workdir or workdir not in profile["write_paths"] or mechanisms["mounts"]["active"]:
        return
    inside = profile.get("read_only_paths") or ()
    if inside:
        from agenticraft.wire.errors import SandboxUnavailable
        raise SandboxUnavailable(
            sandbox_type, ["a private root (mount namespace)"],
            f"the working directory {workdir} holds the host's own Python ({inside[0]}), and "
            "without a private root a sandbox allowed to write there could change code the "
            "host runs next, outside any sandbox. Use a working directory that does not hold "
            "it, drop the 'write' permission, or run where `doctor` shows the private root "
            "available.")


def _below(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip("/") + "/")


#: A home's credential stores, what holds a user's sessions (browser profiles: cookies; shell
#: histories: tokens typed on command lines), and what the user's own programs run or load
#: without being asked (shell start-up files, IPython and Jupyter configuration and kernelspecs,
#: git's and pip's configuration, desktop autostart, caches of pickled data, ~/.local/bin on
#: PATH): hidden from every sandbox even when a working directory holds the home (a notebook
#: server started in it), and never written from one (a write-back skips them, existing or not).
#: A sandbox's own HOME is its scratch directory, so tools inside never looked for them there.
HOME_SECRETS = (
    ".ssh", ".aws", ".gnupg", ".docker", ".kube", ".azure", ".config/gcloud", ".password-store",
    ".local/share/keyrings", ".netrc", ".git-credentials", ".pypirc", ".npmrc", ".pgpass",
    ".my.cnf", ".jupyter", ".mozilla", ".config/google-chrome", ".config/chromium",
    ".bash_history", ".zsh_history", ".local/share/jupyter",
    ".bashrc", ".bash_profile", ".bash_login", ".bash_logout", ".profile", ".zshrc", ".zshenv",
    ".zprofile", ".zlogin", ".config/fish", ".ipython", ".gitconfig", ".config/git",
    ".config/pip", ".pip", ".pydistutils.cfg", ".condarc", ".config/autostart",
    ".config/systemd", ".config/environment.d", ".pam_environment", ".xprofile", ".xsessionrc",
    ".local/bin", ".local/share/applications", ".cache", ".vscode-server")
#: Of those, the directories made (empty, mode 0700) when a working directory holds them but they
#: do not exist yet, so that what a tool puts in them later stays hidden (``make_maskable``).
HOME_SECRET_DIRS = (".ssh", ".aws", ".gnupg", ".docker", ".kube", ".azure", ".config/gcloud",
                    ".local/share/jupyter")


#: The environment a profile depends on (``protected_paths``, ``make_maskable``,
#: ``manager_files``): a profile built for one set of these values is not reused for another.
PROFILE_ENV = ("HOME", "JUPYTER_RUNTIME_DIR", "XDG_RUNTIME_DIR", "AGENTICRAFT_CONFIG")


def make_maskable(workdir: str) -> None:
    """Before a sandbox binds ``workdir``: make each of a home's credential directories inside
    it that does not exist yet (``aws configure`` may make ~/.aws while a notebook in the home
    directory runs). Its mounts hide only what exists when they are made: an empty directory,
    mode 0700, masked from the start, keeps whatever is put in it later hidden too. Protected
    files (the audit log) are made by their owners (``AuditLog.ensure_exists``); others are
    left alone."""
    for path in _home_secret_dirs(os.environ.get("HOME", "")):
        if _below(path, workdir) and not os.path.lexists(path):
            with contextlib.suppress(OSError):  # (the sandbox then reports nothing new)
                os.makedirs(path, mode=0o700, exist_ok=True)


@functools.lru_cache(maxsize=8)
def _home_secret_dirs(home_env: str) -> tuple[str, ...]:
    """``HOME_SECRET_DIRS`` resolved, once per HOME (``home_env`` is only the cache key)."""
    home = Path.home()
    return tuple(str((home / d).resolve()) for d in HOME_SECRET_DIRS)


def protected_paths(extra: Iterable[str] = ()) -> list[str]:
    """Never readable from a sandbox, even inside an allowed directory: the Jupyter runtime dir
    (connection files), the audit log, the administrator's policy, the user's secrets."""
    env = tuple(os.environ.get(k, "") for k in PROFILE_ENV)  # (only the cache key)
    return list(_protected_paths(tuple(extra), env))


@functools.lru_cache(maxsize=64)
def _protected_paths(extra: tuple[str, ...], env: tuple[str, ...]) -> tuple[str, ...]:
    home = Path.home()
    candidates = [
        os.environ.get("JUPYTER_RUNTIME_DIR", ""),
        str(Path(os.environ.get("XDG_RUNTIME_DIR", "/nonexistent")) / "jupyter"),
        str(home / ".local" / "state" / "agenticraft"),
        str(home / ".config" / "agenticraft"),
        *(str(home / secret) for secret in HOME_SECRETS),
        "/etc/agenticraft",
        *extra,
    ]
    return tuple(sorted({str(Path(p).resolve()) for p in candidates if p}))


def manager_files(manager: Any) -> list[str]:
    """Files that decide or record what sandboxes may do: this manager's audit log and its head,
    its policy files and config file. Never visible from a sandbox, wherever they are."""
    files = []
    audit = getattr(manager, "audit", None)
    with contextlib.suppress(Exception):  # made to exist first: a sandbox hides what exists
        audit.ensure_exists()
    for attr in ("path", "head_path"):
        with contextlib.suppress(Exception):
            value = getattr(audit, attr, None)
            if value:
                files.append(str(value))
    for source in getattr(getattr(manager, "policy", None), "sources", ()):
        if isinstance(source, str) and os.path.isabs(source):
            files.append(source)
    for origin in getattr(getattr(manager, "settings", None), "origins", {}).values():
        if isinstance(origin, str) and origin.startswith("config file "):
            files.append(origin[len("config file "):])
    if os.environ.get("AGENTICRAFT_CONFIG"):
        files.append(os.environ["AGENTICRAFT_CONFIG"])
    return files


def build_profile(ctx: SecurityContext, *, scratch_root: str,
                  protect: Iterable[str] = ()) -> dict[str, Any]:
    """The profile sent to the zygote. ``scratch_root`` holds per-worker scratch directories."""
    limits = ctx.resource_limits
    read = [*SYSTEM_READ_PATHS, *python_paths()]
    write: list[str] = list(WRITE_DEVICES)
    workdir = None
    if limits.network_access:
        read += NETWORK_READ_PATHS
    keep: list[str] = []  # read-only inside the writable working directory (mounts.plan)
    if limits.filesystem_access and ctx.working_dir:
        workdir = str(Path(ctx.working_dir).resolve())
        (write if ctx.has_permission("write") else read).append(workdir)
        if ctx.has_permission("write"):
            keep = [p for p in host_code_paths() if _below(p, workdir)]
    deny = protected_paths(protect)
    if workdir is not None:
        make_maskable(workdir)
    return {
        "memory_mb": limits.memory_mb,
        "cpu_percent": limits.cpu_percent,
        "max_file_size_mb": limits.max_file_size_mb,
        "max_processes": limits.max_processes,
        # True: the host's network; a list: own namespace + the egress proxy's socket, which
        # the sandbox backend adds as ``egress_socket``; False: own, empty namespace.
        "network_access": (list(limits.network_access)
                           if isinstance(limits.network_access, tuple)
                           else limits.network_access),
        "filesystem_access": limits.filesystem_access,
        "read_paths": sorted(set(read)),
        "write_paths": write,
        "deny_paths": deny,
        "read_only_paths": keep,
        "workdir": workdir,
        "scratch_root": scratch_root,
    }
