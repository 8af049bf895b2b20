"""The sandbox's own root: a mount namespace in which only what Python needs exists.

Built by the worker right after it entered its user namespace (it holds every capability there
and none outside), the way bubblewrap and nsjail do it, without root and without a daemon:

- a small tmpfs becomes the new root; it is read-only once built;
- read-only binds of exactly the profile's read paths (the interpreter, the standard library, the
  environment's site-packages, shared libraries, the package itself) at their real paths, and the
  host's top-level symlinks (``/lib -> usr/lib``) so those paths resolve as on the host;
- ``/proc`` (the host's, bound: a fresh one needs a PID namespace), a minimal ``/dev`` (null,
  zero, full, random, urandom, tty bound from the host; a private devpts with its own ptmx;
  ``/dev/shm``), and a private, size-limited tmpfs holding ``/tmp``, ``/dev/shm`` and the scratch
  directory: the sandbox's total write quota, enforced by the kernel (ENOSPC), unlinked-but-open
  files included, gone with the namespace;
- the working directory bound read-only, or with the ``write`` permission as an overlay: the
  host directory is its lower layer, its upper layer lies on the private tmpfs, so every write
  there counts against the same quota (``overlay``); the supervisor copies the changes back to
  the host directory when a run ends (``agenticraft.sandbox.writeback``). Every
  protected path inside a bound directory (the audit log and its ``.head``, policy and config
  files, the Jupyter runtime directory, ``~/.ssh``...) is masked by an empty read-only mount.

Nothing else of the host exists inside: no ``/run``, no host ``/tmp``, no home directory, no
sockets but those in a bound directory. Landlock and seccomp still apply underneath.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterable, Mapping
from typing import Any

from agenticraft.jail.confine.libc import (
    MNT_DETACH,
    MOUNT_ATTR_NODEV,
    MOUNT_ATTR_NOSUID,
    MOUNT_ATTR_RDONLY,
    MS_BIND,
    MS_MOVE,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    MS_SLAVE,
    mount,
    mount_setattr,
    move_mount_beneath,
    umount2,
)
from agenticraft.wire.errors import QUOTA_FACTOR

#: The descriptor (in a worker being confined) of the socket on which the private root hands
#: the supervisor each writable directory's overlay: its upper layer and its merged view.
WRITEBACK_FD = 4

#: Device nodes the sandbox gets (bound from the host's /dev).
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
#: Directories of the host that are never bound whole (the sandbox gets its own).
OWN = ("/dev", "/proc", "/tmp")
#: statvfs flags a bind must keep when it is remounted (the kernel refuses to clear locked ones).
_KEEP = {os.ST_NOSUID: MS_NOSUID, os.ST_NODEV: MS_NODEV, os.ST_NOEXEC: MS_NOEXEC,
         os.ST_NOATIME: 0x400, os.ST_NODIRATIME: 0x800, os.ST_RELATIME: 0x200000}
MB = 1024 * 1024
#: Set in the worker once its private root is built: the directories that exist inside it.
VISIBLE: tuple[str, ...] = ()
#: Inside a sandbox: the read-only paths inside its writable working directory (``plan``).
PINNED: tuple[str, ...] = ()


def hidden(path: str) -> bool:
    """True if ``path`` (absolute) is outside everything the private root shows: a host path the
    sandbox cannot see, rather than one that does not exist. False without a private root."""
    if not VISIBLE or not os.path.isabs(path):
        return False
    path = os.path.normpath(path)
    return not any(within(path, v) or within(v, path) for v in VISIBLE)


def _read_only(target: str) -> None:
    """Make the bind at ``target`` (and everything below it) read-only, nosuid, nodev."""
    try:
        mount_setattr(target, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)
        return
    except OSError as exc:
        if exc.errno not in (errno.ENOSYS, errno.EINVAL):
            raise
    # Before Linux 5.12: remount the top bind, keeping the flags the kernel locked.
    flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV
    vfs = os.statvfs(target).f_flag
    for bit, flag in _KEEP.items():
        if vfs & bit:
            flags |= flag
    mount(None, target, None, flags)


def _bind(source: str, target: str, *, writable: bool = False) -> None:
    mount(source, target, None, MS_BIND | MS_REC)
    if not writable:
        _read_only(target)


def _mountpoint(root: str, path: str, like: str) -> str:
    """Create (inside ``root``) an empty directory or file at ``path`` to mount ``like`` on."""
    target = root + path
    if os.path.lexists(target):
        return target
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.path.isdir(like):
        os.mkdir(target)
    else:
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o600))
    return target


def within(path: str, base: str) -> bool:
    """``path`` is ``base`` or lies below it (both absolute and normalised)."""
    return path == base or path.startswith(base.rstrip("/") + "/")


def _real(paths: Iterable[str]) -> list[str]:
    return sorted({os.path.realpath(p) for p in paths if p and os.path.lexists(p)})


def plan(profile: Mapping[str, Any], scratch: str = "") -> dict[str, Any]:
    """What to build, from the profile: pure, so the zygote computes it once per profile (then
    each worker only sets its own ``scratch``)."""
    write = [p for p in profile.get("write_paths", ()) if not within(p, "/dev")]
    read = [p for p in profile.get("read_paths", ())
            if not any(within(p, own) for own in ("/dev", "/proc"))]
    links = sorted({p for p in (*read, *write) if os.path.islink(p)})
    read_real, write_real = _real(read), _real(w for w in write if w != scratch)
    binds: list[tuple[str, bool]] = []
    for path in sorted({*read_real, *write_real}):
        writable = path in write_real
        if path == "/" or path in OWN:
            continue  # never the host's whole root, /dev, /proc or /tmp
        if not writable and any(within(path, b) for b, _ in binds):
            continue  # already visible through a bound parent
        binds.append((path, writable))
    # Read-only paths inside a writable directory (the host's Python environment or this
    # package in the working directory): bound read-only over it, or the sandbox could change
    # code the host runs next, outside any sandbox (a .pth file in the host's site-packages).
    keep = _real(profile.get("read_only_paths", ()))
    pins = [(path, os.path.isdir(path)) for path in sorted({*read_real, *keep})
            if path not in write_real and any(w and within(path, b) for b, w in binds)]
    masks = [(path, os.path.isdir(path)) for path in _real(profile.get("deny_paths", ()))
             if any(within(path, b) for b, _ in binds)]
    quota_mb = max(1, int(profile.get("disk_quota_mb")
                          or QUOTA_FACTOR * profile["max_file_size_mb"]))
    top_links = []
    with contextlib.suppress(OSError), os.scandir("/") as entries:
        top_links = [(e.path, os.readlink(e.path)) for e in entries if e.is_symlink()]
    devices = [name for name in DEVICES if _is_char_device("/dev/" + name)]
    return {"binds": binds, "pins": pins, "masks": masks,
            "links": [(p, os.readlink(p)) for p in links],
            "top_links": top_links, "quota_mb": quota_mb, "scratch": scratch,
            "mountpoints": _mountpoints(binds), "devices": devices,
            "pts": os.path.isdir("/dev/pts")}


def _mountpoints(binds: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
    """The directories (True) and files (False) to create in the new root, in order, so every
    bind has a mount point: looked up once per profile instead of once per worker. A bind
    inside an earlier one needs none (its path shows through the parent); ``/tmp`` is made by
    ``build`` itself (the private tmpfs)."""
    made = {"/tmp"}
    bound: list[str] = []
    creates: list[tuple[str, bool]] = []
    for path, _writable in binds:
        if any(within(path, b) for b in bound):
            continue
        parts = path.strip("/").split("/")
        for depth in range(1, len(parts) + 1):
            here = "/" + "/".join(parts[:depth])
            if here not in made:
                made.add(here)
                creates.append((here, depth < len(parts) or os.path.isdir(path)))
        bound.append(path)
    return creates


def _is_char_device(path: str) -> bool:
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return False


def build(plan: Mapping[str, Any], cwd: str, *, own_proc: bool = False,
          writeback: int | None = None) -> dict[str, Any]:
    """Build the root of ``plan`` and move into it. Call with capabilities in a new user + mount
    namespace, single-threaded, before Landlock and seccomp. ``plan["scratch"]`` (an empty
    directory the zygote made) is used as the mount point of the new root. ``own_proc``: mount
    a fresh ``/proc`` (call as process 1 of a new PID namespace) instead of binding the host's.
    ``writeback``: a socket descriptor; then each writable directory becomes an overlay whose
    upper layer is on the quota tmpfs, and its descriptors are sent there (see ``overlay``);
    without it (or where overlayfs refuses) writable directories are bound read-write."""
    scratch = plan["scratch"]
    mount(None, "/", None, MS_REC | MS_SLAVE)  # nothing we mount reaches the host
    root = scratch
    # The private, size-limited tmpfs: /tmp, /dev/shm and the scratch directory. Mounted first,
    # on the same mount point, then covered by the root's own tmpfs and reached through a
    # descriptor until the switch: it never appears inside the root, so it needs no umount
    # afterwards (an umount waits for an RCU grace period, milliseconds on a busy host).
    quota = plan["quota_mb"]
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV,
          f"size={quota}m,nr_inodes={max(1024, quota * 64)},mode=0755")
    for sub in ("tmp", "shm", "home"):
        os.mkdir(f"{root}/{sub}", 0o1777 if sub != "home" else 0o700)
        os.chmod(f"{root}/{sub}", 0o1777 if sub != "home" else 0o700)
    os.close(os.open(root + "/empty", os.O_CREAT | os.O_WRONLY, 0o400))
    os.mkdir(root + "/emptydir", 0o500)
    data_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    overlays: list[tuple[str, int, int]] = []
    try:
        proc, unbounded = _populate(plan, root, f"/proc/self/fd/{data_fd}", own_proc,
                                    overlays if writeback is not None else None)
        if writeback is not None:
            hand_over(writeback, overlays, renew=own_proc)
            writeback = None
    finally:
        if writeback is not None:  # failed before the hand-over: the sandbox must not keep it
            os.close(writeback)
        os.close(data_fd)
        for _path, upper, merged in overlays:
            os.close(upper)
            os.close(merged)
    mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chdir(cwd)
    global VISIBLE, PINNED
    PINNED = tuple(p for p, _ in plan["pins"])
    VISIBLE = (*(b for b, _ in plan["binds"]), *(p for p, _ in plan["links"]),
               *(p for p, _ in plan["top_links"]), "/tmp", "/dev", "/proc", scratch)
    return {"root": "private", "quota_mb": quota, "binds": len(plan["binds"]),
            "masked": len(plan["masks"]), "pinned": len(plan["pins"]), "proc": proc,
            "overlays": len(overlays),
            "unbounded": unbounded}


def _populate(plan: Mapping[str, Any], root: str, data: str, own_proc: bool,
              overlays: list[tuple[str, int, int]] | None) -> tuple[str, list[str]]:
    """Mount the new root over ``root`` (covering the private tmpfs, reached as ``data``), fill
    it and switch into it. Returns whose ``/proc`` it shows ("own" or "host") and the writable
    directories bound read-write, outside the quota (overlayfs refused them: why)."""
    scratch = plan["scratch"]
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=4096,mode=0755")
    empty = data + "/empty"
    for path, target in plan["top_links"]:
        os.symlink(target, root + path)
    os.mkdir(root + "/tmp")
    mount(f"{data}/tmp", root + "/tmp", None, MS_BIND)
    for path, is_dir in plan["mountpoints"]:
        if is_dir:
            os.mkdir(root + path)
        else:
            os.close(os.open(root + path, os.O_CREAT | os.O_WRONLY, 0o600))
    unbounded = []
    for path, writable in plan["binds"]:
        if writable and overlays is not None and os.path.isdir(path):
            try:
                overlays.append((path, *overlay(path, root + path, f"{data}/wd{len(overlays)}")))
                if renewable(plan, path):
                    ANCHORS.append(os.open(os.path.dirname(root + path),
                                           os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
                continue
            except OSError as exc:
                unbounded.append(f"{path}: {exc.strerror or exc}")
        _bind(path, root + path, writable=writable)
    for path, target in plan["links"]:
        if not os.path.lexists(root + path):
            os.makedirs(os.path.dirname(root + path), exist_ok=True)
            os.symlink(target, root + path)
    if not within(scratch, "/tmp"):
        mount(f"{data}/home", _mountpoint(root, scratch, data), None, MS_BIND)
    else:
        os.makedirs(root + scratch, exist_ok=True)
        os.chmod(root + scratch, 0o700)
    for path, _is_dir in plan["pins"]:  # (a writable parent shows them: made read-only)
        if os.path.lexists(root + path):
            _bind(path, root + path, writable=False)
    for path, is_dir in plan["masks"]:
        if os.path.lexists(root + path):
            _bind(data + "/emptydir" if is_dir else empty, root + path)
    _build_dev(root, data, plan["devices"], plan["pts"])
    os.mkdir(root + "/proc")
    proc = "host"
    if own_proc:
        try:
            mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
            proc = "own"
        except OSError:  # a container that masks parts of its /proc refuses a fresh one
            pass
    if proc == "host":
        mount("/proc", root + "/proc", None, MS_BIND | MS_REC)
    _switch_root(root)
    return proc, unbounded


def overlay(lower: str, target: str, layers: str) -> tuple[int, int]:
    """Mount an overlay of host directory ``lower`` at ``target``: reads see the host's files,
    every change (new and modified files, whiteouts for deletions) lands in an upper layer
    under ``layers`` on the private tmpfs, so the quota bounds it. In a user namespace only
    with ``userxattr`` (Linux >= 5.11; a tmpfs upper needs user xattrs, Linux >= 6.6).
    Directories of the host cannot be renamed inside (EXDEV: no ``redirect_dir`` without
    privileges); ``mv`` and ``shutil.move`` copy instead. Returns descriptors of the upper
    layer and of the merged view (the supervisor's way to both after the switch)."""
    os.mkdir(layers, 0o700)
    os.mkdir(layers + "/u", 0o755)
    os.mkdir(layers + "/w", 0o700)
    lower_fd = os.open(lower, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:  # through the descriptor: a path with "," or ":" needs no escaping
        mount("overlay", target, "overlay", MS_NOSUID | MS_NODEV,
              f"lowerdir=/proc/self/fd/{lower_fd},upperdir={layers}/u,workdir={layers}/w,"
              "userxattr")
    finally:
        os.close(lower_fd)
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    upper = os.open(layers + "/u", flags)
    try:
        return upper, os.open(target, flags)
    except OSError:
        os.close(upper)
        raise


def hand_over(sock_fd: int, overlays: list[tuple[str, int, int]], *, renew: bool) -> None:
    """Send the supervisor, on ``sock_fd``, each overlay's host path with its upper-layer and
    merged-view descriptors (before any sandboxed code runs), then close the socket (this
    process's copy: ``renew`` says the keeper kept one to renew the overlays, see ``renew``)."""
    import json
    import socket

    sock = socket.socket(fileno=sock_fd)
    try:
        fds = [fd for _path, upper, merged in overlays for fd in (upper, merged)]
        data = json.dumps({"paths": [path for path, _u, _m in overlays],
                           "renew": renew}).encode()
        if fds:
            socket.send_fds(sock, [data], fds)
    finally:
        sock.close()


#: Descriptors of the directories that hold an overlay's mount point (in the new root's own
#: read-only tmpfs, kept by ``_populate`` for ``take_anchors``).
ANCHORS: list[int] = []


def renewable(plan: Mapping[str, Any], path: str) -> bool:
    """Whether the overlay of working directory ``path`` can be renewed per session cell
    (``renew``): Landlock must then grant it through the directory holding its mount point
    (see ``take_anchors``), which must be a directory of the new root's own read-only tmpfs,
    not the root itself and not inside another bound directory (a host directory, whose other
    entries Landlock would then grant too)."""
    parent = os.path.dirname(path.rstrip("/"))
    return parent != "/" and not any(within(parent, bound) for bound, _ in plan["binds"])


def take_anchors() -> list[int]:
    """The directories holding the overlays' mount points, as descriptors (the caller closes
    them), for Landlock to grant the working directories through. A rule is tied to an inode,
    and a renewed overlay (``renew``) has other inodes than the one Landlock saw; the access
    check walks up from a file through the overlay's root to the mount point, skips that (a
    covered mount point) and checks its parent, which stays. That parent lies in the new
    root's read-only tmpfs and holds only mount points of paths the profile allows (with the
    mounts' own read-only or read-write state), so granting it adds no reach of its own; the
    new root itself is never an anchor (``renewable``)."""
    taken = list(ANCHORS)
    ANCHORS.clear()
    return taken


# -- a fresh overlay per session cell (in the keeper) ----------------------------------------------
#: Names of the layer directories the keeper made on the private tmpfs (``ov<n>``).
_renewed = [0]


def serve_renewals(plan: Mapping[str, Any], sock_fd: int) -> bool:
    """In the keeper (outside the PID namespace, still holding the capabilities of the
    sandbox's user namespace, in its mount namespace): answer one request of the supervisor on
    ``sock_fd`` to renew an overlay (see ``renew``). False once the supervisor closed it."""
    import json
    import socket

    sock = socket.socket(fileno=sock_fd)
    try:
        try:
            data, fds, _flags, _addr = socket.recv_fds(sock, 1 << 16, 4)
        except OSError:
            return False
        if not data:
            for fd in fds:
                os.close(fd)
            return False
        out: list[int] = []
        try:
            request = json.loads(data)
            if len(fds) != 2:
                raise ValueError("a renewal needs the old upper layer and its mount's parent")
            out = list(renew(plan, str(request["path"]), fds[0], fds[1],
                             held=max(0, int(request.get("held", 0)))))
            reply: dict[str, Any] = {"ok": True}
        except Exception as exc:  # told to the supervisor, which keeps the old overlay
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        finally:
            for fd in fds:
                os.close(fd)
        try:
            if out:
                socket.send_fds(sock, [json.dumps(reply).encode()], out)
            else:
                sock.send(json.dumps(reply).encode())
        except OSError:
            return False
        finally:
            for fd in out:
                os.close(fd)
        return True
    finally:
        sock.detach()


def renew(plan: Mapping[str, Any], path: str, old_upper: int, parent: int, *,
          held: int = 0) -> tuple[int, int]:
    """Replace the overlay of working directory ``path`` (``old_upper``: its upper layer,
    ``parent``: the directory it is mounted in) by a fresh one: the same host directory as
    lower layer, an empty upper layer. overlayfs caches its lookups of the lower layer: a host
    file the session opened and the host then replaced by rename, or a name looked up before
    the host created it, would otherwise keep their old state until the sandbox ends.

    Called before a session cell, after the supervisor copied the last kept cell's changes to
    the host (or undid a rolled-back cell's): the fresh overlay shows what the old one did.
    Built out of sight on the private tmpfs with its protected paths masked, mounted beneath
    the old one, then the old one is detached: there is no moment at which the path shows
    neither. Descriptors still open on the old overlay (a file or directory the session's
    Python state holds) keep working on the old, detached view; its upper layer is removed,
    so what is written through them no longer reaches the host, and their space is freed
    when they are closed. ``held``: the bytes of the session's files the host already has
    (they counted against the quota in the old upper layer): the private tmpfs shrinks by
    that much, so the quota still bounds the session's changes in total. Returns the new
    upper layer and merged view."""
    if any(within(p, path) for p, _ in plan["links"]) or any(
            p != path and within(p, path) for p, _ in plan["binds"]):
        raise OSError(errno.ENOTSUP, "other mounts or links lie inside this directory")
    if not renewable(plan, path):
        raise OSError(errno.ENOTSUP, "a working directory at the top of the file system or "
                                     "inside another directory the sandbox binds")
    flags = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
    layers_fd = os.open("..", flags, dir_fd=old_upper)
    data_fd = os.open("..", flags, dir_fd=layers_fd)
    # The mount point, by path: no descriptor here holds the old overlay, so once detached
    # (and left by the session's processes) its upper layer's space is freed at once.
    target = f"/proc/self/fd/{parent}/{os.path.basename(path.rstrip('/'))}"
    try:
        data = f"/proc/self/fd/{data_fd}"
        old_layers = _name_of(data_fd, os.fstat(layers_fd).st_ino)
        _renewed[0] += 1
        layers = f"{data}/ov{_renewed[0]}"
        stage = layers + ".m"
        os.mkdir(stage, 0o700)
        upper, merged = overlay(path, stage, layers)
        try:
            for pin, _is_dir in plan["pins"]:
                if pin != path and within(pin, path) and os.path.lexists(
                        stage + pin[len(path):]):
                    _bind(pin, stage + pin[len(path):], writable=False)
            for mask, is_dir in plan["masks"]:
                if mask != path and within(mask, path) and os.path.lexists(
                        stage + mask[len(path):]):
                    _bind(data + ("/emptydir" if is_dir else "/empty"), stage + mask[len(path):])
            move_mount_beneath(stage, target)
        except BaseException:
            with contextlib.suppress(OSError):
                umount2(stage, MNT_DETACH)
            os.close(upper)
            os.close(merged)
            raise
        umount2(target, MNT_DETACH)  # the top one: the old overlay
        os.rmdir(stage)
        if old_layers:
            _remove(data_fd, old_layers)
        _set_quota(data, plan["quota_mb"] * MB - held)
        return upper, merged
    finally:
        for fd in (layers_fd, data_fd):
            os.close(fd)


def _name_of(dir_fd: int, inode: int) -> str | None:
    with os.scandir(f"/proc/self/fd/{dir_fd}") as entries:
        return next((e.name for e in entries
                     if e.inode() == inode and e.is_dir(follow_symlinks=False)), None)


def _remove(dir_fd: int, name: str) -> None:
    """Remove layer directory ``name``. overlayfs leaves its work directory ``w/work`` mode 000:
    opened by descriptors without following links and made searchable first. Nothing is ever
    retried by path: the old upper layer's contents may have been changed, through a descriptor
    the session kept on the detached overlay, into links pointing anywhere; rmtree walks by
    descriptors and removes links, never what they point to."""
    import shutil

    with contextlib.suppress(OSError):
        work = os.open(f"{name}/w/work", os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            if stat.S_ISDIR(os.fstat(work).st_mode):
                os.chmod(f"/proc/self/fd/{work}", 0o700)
        finally:
            os.close(work)
    shutil.rmtree(f"/proc/self/fd/{dir_fd}/{name}", ignore_errors=True)


def _set_quota(data: str, size: int) -> None:
    """Resize the private tmpfs to ``size`` bytes, or to what it already holds if that is more
    (files the session keeps open after deleting them)."""
    vfs = os.statvfs(data)
    used = (vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize
    size = max(size, used, vfs.f_frsize)
    mount(None, data, None, MS_REMOUNT | MS_NOSUID | MS_NODEV, f"size={size}")


#: Terminals a sandbox's own devpts may hold at once (``!cmd`` and ``%%sh`` take one while they
#: run). Every devpts instance but the host's first draws from one pool, kernel.pty.max minus
#: kernel.pty.reserve (3072 by default): without a cap one session held them all and left every
#: other sandbox and container on the machine without a terminal.
PTY_MAX = 16


def terminals_full() -> bool:
    """Inside a sandbox: its own devpts holds its ``PTY_MAX`` terminals, so opening one more
    failed with ENOSPC (which is then not the write quota). False without a private root."""
    if not VISIBLE:
        return False
    try:
        return sum(1 for name in os.listdir("/dev/pts") if name.isdigit()) >= PTY_MAX
    except OSError:
        return False


def _build_dev(root: str, data: str, devices: Iterable[str], pts: bool) -> None:
    dev = root + "/dev"
    os.mkdir(dev)
    for name in devices:
        os.close(os.open(f"{dev}/{name}", os.O_CREAT | os.O_WRONLY, 0o600))
        mount("/dev/" + name, f"{dev}/{name}", None, MS_BIND)
    os.mkdir(dev + "/shm")
    mount(f"{data}/shm", dev + "/shm", None, MS_BIND)
    if pts:
        os.mkdir(dev + "/pts")
        mount("devpts", dev + "/pts", "devpts", MS_NOSUID | MS_NOEXEC,
               f"newinstance,ptmxmode=0666,mode=0620,max={PTY_MAX}")
        os.symlink("pts/ptmx", dev + "/ptmx")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{dev}/{name}")


def _switch_root(root: str) -> None:
    """Make ``root`` this process's ``/``: move its mount over the host's root and chroot into
    it (what switch_root does). Not pivot_root: that walks every thread on the host to move
    their roots, and detaching the old root then waits for an RCU grace period: 5-20 ms per
    worker on a busy host. The host's root stays covered beneath: no process of this mount
    namespace refers to it, nothing inside reaches it by path (``..`` stops at the chroot),
    and uncovering it needs umount or chroot, which take capabilities the worker drops next
    and which seccomp denies."""
    os.chdir(root)
    mount(root, "/", None, MS_MOVE)
    os.chroot(".")
    os.chdir("/")


_probe_cache: dict[str, Any] | None = None


def probe() -> dict[str, Any]:
    """Can a worker build its own root here? Tried for real, in a child, the way a worker does
    it: new user + mount (+ PID) namespaces, a root with binds, /dev, devpts and /proc (a fresh
    one as process 1 of a PID namespace, where the host allows it), switch_root."""
    global _probe_cache
    if _probe_cache is None:
        with_pid = _probe_in_child(pid=True)
        found = with_pid if with_pid[0] == "1" else _probe_in_child(pid=False)
        if found[0] == "1":
            overlay_ok = found[1:] == "overlay"
            _probe_cache = {
                "available": True, "pid_namespace": with_pid[0] == "1", "overlay": overlay_ok,
                "detail": "a private root (mount namespace, switch_root, tmpfs, devpts, bind "
                "mounts) can be built without privileges" + (
                    ", in a PID namespace with its own /proc" if with_pid[0] == "1" else
                    f"; no PID namespace with its own /proc here ({_why(with_pid)}): the "
                    "host's /proc is bound (Landlock keeps it unreadable)") + (
                    "; a writable working directory is an overlay on the quota tmpfs" + (
                        ", renewed before each session cell (host renames show)"
                        if with_pid[0] == "1" else ", kept for a whole session (no keeper "
                        "outside a PID namespace to renew it: host renames may not show)")
                    if overlay_ok else f"; overlayfs cannot be mounted here ({found[1:]}): a "
                    "writable working directory is bound read-write, bounded per file only")}
        else:
            _probe_cache = {"available": False, "pid_namespace": False, "overlay": False,
                            "detail": "a private root cannot be built here: "
                            f"{found[1:] or 'the probe died'}"}
    return _probe_cache


def _why(answer: str) -> str:
    return answer[1:] if answer[:1] == "0" else "unknown"


def _probe_in_child(*, pid: bool) -> str:
    """"1" and "overlay" or why a writable directory cannot be one, or "0" and why not."""
    import sys
    import tempfile

    from agenticraft.jail.confine import namespaces

    scratch = tempfile.mkdtemp(prefix="agenticraft-probe-")
    writable = tempfile.mkdtemp(prefix="agenticraft-probe-rw-")
    marker = scratch + "/host-only"  # exists on the host, must not inside
    os.close(os.open(marker, os.O_CREAT | os.O_WRONLY, 0o600))
    import socket
    hand, hand_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    r, w = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.close(r)
        try:
            namespaces.enter(network=False, mount=True, pid=pid, drop=False)
            if pid and os.fork():  # the answer comes from process 1 of the new namespace
                os._exit(os.waitstatus_to_exitcode(os.wait()[1]) & 0x7F)
            read = [os.path.dirname(os.path.realpath(sys.executable)), sys.prefix,
                    sys.base_prefix]
            hand.close()
            done = build(plan({"read_paths": read, "write_paths": [writable],
                               "max_file_size_mb": 1}, scratch), "/", own_proc=pid,
                         writeback=hand_child.detach())
            if os.path.exists(marker) or not os.path.isdir("/proc/self"):
                answer = "0the host is still visible after switching root"
            elif pid and (done["proc"] != "own" or os.getpid() != 1
                          or not os.path.isdir("/proc/1")):
                answer = "0a fresh /proc could not be mounted"
            else:
                answer = "1" + ("overlay" if done["overlays"] == 1 else
                                "; ".join(done["unbounded"]) or "not tried")
        except OSError as exc:
            answer = f"0{exc.strerror or exc}"
        except Exception as exc:
            answer = f"0{type(exc).__name__}: {exc}"
        os.write(w, answer.encode()[:1000])
        os._exit(0)
    os.close(w)
    hand_child.close()
    answer = os.read(r, 1024).decode(errors="replace")
    os.close(r)
    os.waitpid(child, 0)
    with contextlib.suppress(OSError):
        _data, fds, _flags, _addr = socket.recv_fds(hand, 64, 4, socket.MSG_DONTWAIT)
        for fd in fds:
            os.close(fd)
    hand.close()
    with contextlib.suppress(OSError):
        os.unlink(marker)
        os.rmdir(scratch)
        os.rmdir(writable)
    return answer or "0the probe died"
