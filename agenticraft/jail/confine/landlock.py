"""Landlock confinement for a freshly forked sandbox child (ctypes, no third-party bindings).

Landlock is an unprivileged, stackable Linux LSM.  Once :func:`apply` has called
``landlock_restrict_self`` the calling thread (and every process it later creates) can only
reach the filesystem objects, TCP ports and IPC peers that the ruleset allows.  The
restriction can never be lifted again.

Design notes / honest limits:

* Only what the running kernel's ABI knows can be enforced.  :func:`apply` reports what
  was actually handled (``handled_fs``, ``net``, ``scope``) so callers can tell the user.
* Landlock restricts the *calling thread* only (there is no thread-sync before ABI 8), so
  :func:`apply` refuses to run in a multi-threaded process instead of leaving threads
  unconfined.  A freshly forked child has exactly one thread.
* File descriptors opened before :func:`apply` are not re-checked (e.g. the result pipe).
* Landlock is path based: a hard link to a file of a denied subtree that lives outside it
  is reachable through the allowed link path.
* ``deny_paths`` is implemented by *not* granting the allowed root and granting its
  entries instead (Landlock has no deny rules).  Consequence: in every directory that lies
  on the way from an allowed root down to a denied subtree, existing entries keep their
  access but the directory itself is not granted, i.e. it cannot be listed and no entry can
  be created, removed or renamed directly inside it.  Entries created there later by other
  processes are not accessible either.
* Symlinks met while walking such a directory are not followed (a rule on a link target
  outside the root would widen access); access through them is decided by the target's own
  location, exactly as for a directly granted root.

The syscall numbers 444-446 are the same on every architecture that uses the unified
syscall table (x86_64, aarch64, riscv64, ...).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import stat
from collections.abc import Iterable, Sequence
from typing import Any

from agenticraft.jail.confine.libc import set_no_new_privs, syscall, thread_count

__all__ = [
    "ACCESS_FILE",
    "ACCESS_FS_ABI1",
    "ACCESS_FS_READ",
    "LANDLOCK_ACCESS_FS_EXECUTE",
    "LANDLOCK_ACCESS_FS_IOCTL_DEV",
    "LANDLOCK_ACCESS_FS_MAKE_BLOCK",
    "LANDLOCK_ACCESS_FS_MAKE_CHAR",
    "LANDLOCK_ACCESS_FS_MAKE_DIR",
    "LANDLOCK_ACCESS_FS_MAKE_FIFO",
    "LANDLOCK_ACCESS_FS_MAKE_REG",
    "LANDLOCK_ACCESS_FS_MAKE_SOCK",
    "LANDLOCK_ACCESS_FS_MAKE_SYM",
    "LANDLOCK_ACCESS_FS_READ_DIR",
    "LANDLOCK_ACCESS_FS_READ_FILE",
    "LANDLOCK_ACCESS_FS_REFER",
    "LANDLOCK_ACCESS_FS_REMOVE_DIR",
    "LANDLOCK_ACCESS_FS_REMOVE_FILE",
    "LANDLOCK_ACCESS_FS_TRUNCATE",
    "LANDLOCK_ACCESS_FS_WRITE_FILE",
    "LANDLOCK_ACCESS_NET_BIND_TCP",
    "LANDLOCK_ACCESS_NET_CONNECT_TCP",
    "LANDLOCK_CREATE_RULESET_VERSION",
    "LANDLOCK_RULE_NET_PORT",
    "LANDLOCK_RULE_PATH_BENEATH",
    "LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET",
    "LANDLOCK_SCOPE_SIGNAL",
    "SYS_LANDLOCK_ADD_RULE",
    "SYS_LANDLOCK_CREATE_RULESET",
    "SYS_LANDLOCK_RESTRICT_SELF",
    "abi_version",
    "apply",
    "handled_fs_for_abi",
    "probe",
]

# --------------------------------------------------------------------------- syscalls
SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446

LANDLOCK_CREATE_RULESET_VERSION = 1 << 0

LANDLOCK_RULE_PATH_BENEATH = 1
LANDLOCK_RULE_NET_PORT = 2

# ------------------------------------------------------------- filesystem access rights
# ABI 1
LANDLOCK_ACCESS_FS_EXECUTE = 1 << 0
LANDLOCK_ACCESS_FS_WRITE_FILE = 1 << 1
LANDLOCK_ACCESS_FS_READ_FILE = 1 << 2
LANDLOCK_ACCESS_FS_READ_DIR = 1 << 3
LANDLOCK_ACCESS_FS_REMOVE_DIR = 1 << 4
LANDLOCK_ACCESS_FS_REMOVE_FILE = 1 << 5
LANDLOCK_ACCESS_FS_MAKE_CHAR = 1 << 6
LANDLOCK_ACCESS_FS_MAKE_DIR = 1 << 7
LANDLOCK_ACCESS_FS_MAKE_REG = 1 << 8
LANDLOCK_ACCESS_FS_MAKE_SOCK = 1 << 9
LANDLOCK_ACCESS_FS_MAKE_FIFO = 1 << 10
LANDLOCK_ACCESS_FS_MAKE_BLOCK = 1 << 11
LANDLOCK_ACCESS_FS_MAKE_SYM = 1 << 12
# ABI 2
LANDLOCK_ACCESS_FS_REFER = 1 << 13
# ABI 3
LANDLOCK_ACCESS_FS_TRUNCATE = 1 << 14
# ABI 5
LANDLOCK_ACCESS_FS_IOCTL_DEV = 1 << 15

# ------------------------------------------------------------------ network (ABI 4)
LANDLOCK_ACCESS_NET_BIND_TCP = 1 << 0
LANDLOCK_ACCESS_NET_CONNECT_TCP = 1 << 1

# ------------------------------------------------------------------- scoping (ABI 6)
LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
LANDLOCK_SCOPE_SIGNAL = 1 << 1

ACCESS_FS_ABI1 = (
    LANDLOCK_ACCESS_FS_EXECUTE
    | LANDLOCK_ACCESS_FS_WRITE_FILE
    | LANDLOCK_ACCESS_FS_READ_FILE
    | LANDLOCK_ACCESS_FS_READ_DIR
    | LANDLOCK_ACCESS_FS_REMOVE_DIR
    | LANDLOCK_ACCESS_FS_REMOVE_FILE
    | LANDLOCK_ACCESS_FS_MAKE_CHAR
    | LANDLOCK_ACCESS_FS_MAKE_DIR
    | LANDLOCK_ACCESS_FS_MAKE_REG
    | LANDLOCK_ACCESS_FS_MAKE_SOCK
    | LANDLOCK_ACCESS_FS_MAKE_FIFO
    | LANDLOCK_ACCESS_FS_MAKE_BLOCK
    | LANDLOCK_ACCESS_FS_MAKE_SYM
)

#: Rights that may be granted on a non-directory (the kernel rejects others with EINVAL).
ACCESS_FILE = (
    LANDLOCK_ACCESS_FS_EXECUTE
    | LANDLOCK_ACCESS_FS_WRITE_FILE
    | LANDLOCK_ACCESS_FS_READ_FILE
    | LANDLOCK_ACCESS_FS_TRUNCATE
    | LANDLOCK_ACCESS_FS_IOCTL_DEV
)

#: Rights granted to read-only paths.
ACCESS_FS_READ = (
    LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR | LANDLOCK_ACCESS_FS_EXECUTE
)


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [
        ("allowed_access", ctypes.c_uint64),
        ("parent_fd", ctypes.c_int32),
    ]


class _NetPortAttr(ctypes.Structure):
    _fields_ = [
        ("allowed_access", ctypes.c_uint64),
        ("port", ctypes.c_uint64),
    ]


_abi_cache: int | None = None
_abi_reason: str = ""


def handled_fs_for_abi(abi: int) -> int:
    """Filesystem rights a ruleset can handle on Landlock ABI ``abi`` (0 if unsupported)."""
    if abi < 1:
        return 0
    rights = ACCESS_FS_ABI1
    if abi >= 2:
        rights |= LANDLOCK_ACCESS_FS_REFER
    if abi >= 3:
        rights |= LANDLOCK_ACCESS_FS_TRUNCATE
    if abi >= 5:
        rights |= LANDLOCK_ACCESS_FS_IOCTL_DEV
    return rights


def abi_version() -> int:
    """Landlock ABI version of the running kernel, 0 if unsupported or disabled (cached)."""
    global _abi_cache, _abi_reason
    if _abi_cache is None:
        abi = 0
        try:
            abi = syscall(
                SYS_LANDLOCK_CREATE_RULESET,
                ctypes.c_void_p(None),
                ctypes.c_size_t(0),
                ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION),
            )
        except AttributeError as exc:  # pragma: no cover - libc without syscall()
            _abi_reason = f"cannot issue raw syscalls ({exc})"
        except OSError as exc:
            if exc.errno == errno.ENOSYS:
                _abi_reason = "the kernel has no Landlock support (ENOSYS)"
            elif exc.errno == errno.EOPNOTSUPP:
                _abi_reason = "Landlock is built in but disabled at boot (EOPNOTSUPP)"
            else:
                _abi_reason = f"the Landlock version query failed ({exc.strerror})"
        _abi_cache = max(abi, 0)
    return _abi_cache


def probe() -> dict[str, Any]:
    """Describe what Landlock can enforce on this kernel (no side effects besides a query)."""
    abi = abi_version()
    if abi < 1:
        return {
            "available": False,
            "abi": 0,
            "filesystem": False,
            "tcp": False,
            "scope": False,
            "detail": (
                f"Landlock is unavailable: {_abi_reason or 'unknown reason'}; filesystem, "
                "TCP and IPC-scope confinement cannot be enforced by Landlock."
            ),
        }
    parts = ["filesystem access control"]
    missing = []
    if abi < 2:
        missing.append("cross-directory link/rename (always denied on ABI 1)")
    if abi < 3:
        missing.append("truncate()")
    if abi >= 4:
        parts.append("TCP bind/connect")
    else:
        missing.append("TCP bind/connect")
    if abi < 5:
        missing.append("device ioctl")
    if abi >= 6:
        parts.append("abstract unix socket and signal scoping")
    else:
        missing.append("abstract unix socket and signal scoping")
    detail = f"Landlock ABI {abi} enforces " + ", ".join(parts) + "."
    if missing:
        detail += " Not enforceable on this ABI: " + ", ".join(missing) + "."
    detail += (
        " Never covered by Landlock: UDP, raw and other non-TCP sockets, and file "
        "descriptors opened before confinement."
    )
    return {
        "available": True,
        "abi": abi,
        "filesystem": True,
        "tcp": abi >= 4,
        "scope": abi >= 6,
        "detail": detail,
    }


# ------------------------------------------------------------------------- helpers
def _norm(path: str | os.PathLike[str]) -> str:
    return _realpath(os.path.abspath(os.fspath(path)))


@functools.lru_cache(maxsize=512)
def _realpath(path: str) -> str:
    """Cached: the zygote warms it (``prepare``) so forked workers skip the lstat walks."""
    return os.path.realpath(path)


def prepare(paths: Iterable[str | os.PathLike[str]]) -> None:
    """Resolve paths ahead of time in a long-lived parent (the zygote) before it forks."""
    for path in paths:
        if os.fspath(path):
            _norm(path)


def _within(path: str, base: str) -> bool:
    """True if ``path`` equals ``base`` or lies below it (both normalised)."""
    if path == base:
        return True
    prefix = base if base.endswith("/") else base + "/"
    return path.startswith(prefix)


class _RuleBuilder:
    def __init__(self, ruleset_fd: int, handled_fs: int) -> None:
        self.ruleset_fd = ruleset_fd
        self.handled_fs = handled_fs
        self.rules = 0
        self.skipped: list[str] = []

    def add_path(self, path: str, access: int, *, follow: bool, report_as: str) -> None:
        flags = os.O_PATH | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
        try:
            fd = os.open(path, flags)
        except OSError:
            # Nonexistent (or unreachable) path: nothing to grant.  Fail closed.
            self.skipped.append(report_as)
            return
        try:
            self.add_fd(fd, access, path)
        finally:
            os.close(fd)

    def add_fd(self, fd: int, access: int, path: str) -> None:
        """The rule for the file ``fd`` (an ``O_PATH`` descriptor) is open on."""
        mode = os.fstat(fd).st_mode
        if stat.S_ISLNK(mode):
            # Only reached with follow=False: never grant a link's target from a walk.
            return
        access &= self.handled_fs
        if not stat.S_ISDIR(mode):
            access &= ACCESS_FILE
        if not access:
            return
        attr = _PathBeneathAttr(allowed_access=access, parent_fd=fd)
        try:
            syscall(
                SYS_LANDLOCK_ADD_RULE,
                ctypes.c_int(self.ruleset_fd),
                ctypes.c_int(LANDLOCK_RULE_PATH_BENEATH),
                ctypes.byref(attr),
                ctypes.c_uint32(0),
            )
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"landlock_add_rule({path!r}, access={access:#x}) failed: {exc.strerror}",
            ) from None
        self.rules += 1

    def add_root_excluding(self, root: str, denied: list[str], access: int) -> None:
        """Grant everything below directory ``root`` except the ``denied`` subtrees."""
        try:
            with os.scandir(root) as it:
                entries = list(it)
        except OSError:
            self.skipped.append(root)
            return
        for entry in entries:
            path = entry.path
            if path in denied:
                continue
            below = [d for d in denied if _within(d, path)]
            if below:
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    is_dir = False
                if is_dir:
                    self.add_root_excluding(path, below, access)
                    continue
                # A non-directory (or symlink) cannot contain the real denied path:
                # treat it like any other entry below.
            self.add_path(path, access, follow=False, report_as=path)


# ---------------------------------------------------------------------------- apply
def apply(
    read_paths: Iterable[str | os.PathLike[str]],
    write_paths: Iterable[str | os.PathLike[str]],
    *,
    allow_tcp: bool,
    deny_paths: Sequence[str | os.PathLike[str]] = (),
    scope: bool = True,
    write_fds: Iterable[int] = (),
) -> dict[str, Any]:
    """Restrict the calling (single-threaded) process with Landlock, best effort per ABI.

    Returns ``{"abi", "handled_fs", "net", "scope", "rules", "skipped", "denied_roots"}``
    where ``net`` is ``"denied"`` (every TCP bind/connect refused), ``"allowed"`` (caller
    asked for TCP) or ``"unsupported"`` (ABI < 4: TCP is NOT restricted by Landlock),
    ``scope`` tells whether abstract-unix-socket and signal scoping is in force,
    ``skipped`` lists paths that could not be opened (typically nonexistent) and got no
    rule and ``denied_roots`` lists allowed roots dropped because they lie inside a denied
    path. ``write_fds``: directories, as open descriptors, granted like ``write_paths`` (one
    that no path may name when the rule is needed: see ``mounts.take_anchors``). Raises
    :class:`OSError` if Landlock is unavailable or cannot be enforced.
    """
    for name, value in (
        ("read_paths", read_paths),
        ("write_paths", write_paths),
        ("deny_paths", deny_paths),
    ):
        if isinstance(value, str | bytes | os.PathLike):
            # A bare string would be iterated character by character ("/" = everything).
            raise TypeError(f"{name} must be a collection of paths, not a single path")
    abi = abi_version()
    if abi < 1:
        raise OSError(
            errno.EOPNOTSUPP,
            f"Landlock confinement requested but unavailable: {_abi_reason or 'unknown'}",
        )
    threads = thread_count()
    if threads != 1:
        raise OSError(
            errno.EBUSY,
            f"Landlock can only confine the calling thread; refusing to apply in a process "
            f"with {threads} threads (other threads would stay unconfined)",
        )

    handled_fs = handled_fs_for_abi(abi)
    attr = _RulesetAttr(handled_access_fs=handled_fs, handled_access_net=0, scoped=0)
    net = "unsupported"
    if abi >= 4:
        if allow_tcp:
            net = "allowed"
        else:
            attr.handled_access_net = LANDLOCK_ACCESS_NET_BIND_TCP | LANDLOCK_ACCESS_NET_CONNECT_TCP
            net = "denied"
    scoped = False
    if abi >= 6 and scope:
        attr.scoped = LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | LANDLOCK_SCOPE_SIGNAL
        scoped = True
    attr_size = 8 if abi < 4 else 16 if abi < 6 else 24

    try:
        ruleset_fd = syscall(
            SYS_LANDLOCK_CREATE_RULESET,
            ctypes.byref(attr),
            ctypes.c_size_t(attr_size),
            ctypes.c_uint32(0),
        )
    except OSError as exc:
        raise OSError(exc.errno, f"landlock_create_ruleset failed: {exc.strerror}") from None

    try:
        builder = _RuleBuilder(ruleset_fd, handled_fs)
        denied = [_norm(p) for p in deny_paths if os.fspath(p)]
        denied_roots: list[str] = []
        plan = [(p, ACCESS_FS_READ) for p in read_paths]
        plan += [(p, handled_fs) for p in write_paths]
        for raw, access in plan:
            shown = os.fspath(raw)
            if not shown:  # "" would otherwise normalise to the working directory
                builder.skipped.append(shown)
                continue
            root = _norm(raw)
            if any(_within(root, d) for d in denied):
                denied_roots.append(shown)
                continue
            inner = [d for d in denied if _within(d, root)]
            if inner and os.path.isdir(root):
                builder.add_root_excluding(root, inner, access)
            else:
                builder.add_path(root, access, follow=True, report_as=shown)
        for fd in write_fds:
            builder.add_fd(fd, handled_fs, f"/proc/self/fd/{fd}")

        set_no_new_privs()
        try:
            syscall(SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset_fd), ctypes.c_uint32(0))
        except OSError as exc:
            raise OSError(
                exc.errno, f"landlock_restrict_self failed, process NOT confined: {exc.strerror}"
            ) from None
    finally:
        with contextlib.suppress(OSError):
            os.close(ruleset_fd)

    return {
        "abi": abi,
        "handled_fs": handled_fs,
        "net": net,
        "scope": scoped,
        "rules": builder.rules,
        "skipped": builder.skipped,
        "denied_roots": denied_roots,
    }
