"""Copying a sandbox's changes to a writable working directory back to the host directory.

Inside the sandbox a writable working directory is an overlay (``jail.confine.mounts.overlay``):
the host directory is its lower layer and every change lands in an upper layer on the
sandbox's size-limited tmpfs, so the kernel bounds the total written (ENOSPC at the quota,
unlinked-but-open files included). The host directory itself changes only here, in the
supervisor, outside every namespace of the sandbox, from the two descriptors the sandbox's
init sent before any sandboxed code ran: the upper layer (which names what changed) and the
merged view (what the sandbox sees).

Semantics (docs/security-model.md): the host sees a run's writes when the run ends normally
(a result or the code's own exception), a session's at the end of each cell it keeps. A run
or cell ended by a limit, a timeout, a violation or a crash is not copied: a one-shot run's
changes die with its sandbox; a rolled-back session cell's changes are undone in the
session's view (``revert``), so the session and the host agree again.

What is copied: regular files (content, permission bits, modification time), directories,
deletions (whiteouts, opaque directories). Never copied: symlinks and special files (fifos,
sockets) the sandbox made: reported as skipped; a host entry one of them replaced is removed.
Every path is walked one component at a time with ``O_NOFOLLOW`` from a directory descriptor,
on both sides, so neither a symlink planted in the sandbox nor one on the host makes the copy
read or write outside the working directory. Protected paths (the audit log, policy and
config files) are never written. In a directory the host imports from (``guard_code``: an agent
host's own script directory, started as ``python /srv/app/server.py`` from ``/srv/app``) Python
code is neither copied, replaced nor deleted: a ``json.py`` there would run in the host's next
start, before the standard library, outside any sandbox.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import importlib.machinery
import json
import os
import secrets
import shutil
import socket
import stat
from collections.abc import Callable, Iterable, Iterator
from typing import Any

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: Deeper than this, a directory's contents are neither scanned nor copied (reported).
MAX_DEPTH = 128
_OPAQUE = "user.overlay.opaque"
#: What one entry of the upper layer looked like: changed if any of these changed.
Signature = tuple[int, int, int, int, int]
#: Names Python imports or runs from a directory on its path: modules, bytecode (also in
#: ``__pycache__``), extension modules, ``.pth`` files (run by ``site`` in a site directory).
CODE_SUFFIXES = tuple(sorted({*importlib.machinery.all_suffixes(), ".pyo", ".pyw", ".pth",
                              ".so", ".pyd"}))
CODE_NOTE = "Python code, and the host imports from this directory"
#: Says whether a name is never to be changed on the host (None: every name may be).
Guard = Callable[[str], bool] | None


def is_code(name: str) -> bool:
    """True for a name Python would import or run (see ``CODE_SUFFIXES``)."""
    return name.endswith(CODE_SUFFIXES)


@dataclasses.dataclass
class Report:
    """What one copy-back (or revert) did."""

    copied: int = 0
    deleted: int = 0
    bytes: int = 0
    skipped: list[str] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def receive(sock_fd: int) -> list[Overlay]:
    """The overlays a new worker's private root handed over on ``sock_fd``. Sent before the
    worker's ready frame, so nothing waits: empty when there were none. The socket is closed
    here, unless the sandbox's keeper serves renewals on it (``Keeper``)."""
    sock = socket.socket(fileno=sock_fd)
    keep = False
    try:
        sock.setblocking(False)
        data, fds, _flags, _addr = socket.recv_fds(sock, 1 << 16, 64)
    except (BlockingIOError, OSError):
        sock.close()
        return []
    try:
        message = json.loads(data) if data else {}
        if isinstance(message, list):  # an image built before renewals: a list of paths
            message = {"paths": message}
        paths = message.get("paths", []) if isinstance(message, dict) else None
        if not isinstance(paths, list) or len(fds) != 2 * len(paths):
            raise ValueError("malformed overlay hand-over")
        keeper = Keeper(sock) if paths and message.get("renew") is True else None
        keep = keeper is not None
        return [Overlay(str(path), fds[2 * i], fds[2 * i + 1], keeper=keeper)
                for i, path in enumerate(paths)]
    except ValueError:
        for fd in fds:
            os.close(fd)
        return []
    finally:
        if not keep:
            sock.close()


class Keeper:
    """The channel to a sandbox's keeper, which renews its overlays (``mounts.renew``): the
    keeper is the one process of the sandbox that may still mount, and nothing inside the
    sandbox reaches it."""

    #: A renewal takes about a millisecond; a keeper that does not answer is given up.
    TIMEOUT = 5.0

    def __init__(self, sock: socket.socket) -> None:
        self.sock: socket.socket | None = sock
        sock.settimeout(self.TIMEOUT)
        self.error = ""

    def renew(self, path: str, upper: int, parent: int, held: int) -> tuple[int, int] | None:
        """A fresh upper layer and merged view for ``path`` (mounted in ``parent``), or None
        (``error`` says why)."""
        if self.sock is None:
            return None
        fds: list[int] = []
        try:
            socket.send_fds(self.sock, [json.dumps({"path": path, "held": held}).encode()],
                            [upper, parent])
            data, fds, _flags, _addr = socket.recv_fds(self.sock, 1 << 16, 2)
            reply = json.loads(data) if data else {"error": "the keeper is gone"}
        except (OSError, ValueError) as exc:  # out of step with the keeper: never ask again
            self.error = f"the keeper did not answer ({exc})"
            self.close()
            for fd in fds:
                os.close(fd)
            return None
        if reply.get("ok") is True and len(fds) == 2:
            return fds[0], fds[1]
        for fd in fds:
            os.close(fd)
        self.error = str(reply.get("error", "the keeper refused"))
        return None

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class Overlay:
    """One writable directory: the host path, the upper layer and the merged view."""

    def __init__(self, host: str, upper: int, merged: int, protect: Iterable[str] = (), *,
                 keeper: Keeper | None = None) -> None:
        self.host = host
        self.upper = upper
        self.merged = merged
        self.protect: tuple[str, ...] = ()
        #: The host imports from this directory itself: Python code in it is never changed.
        self.guard_code = False
        self.protected(protect)
        #: The upper layer as of the last copy-back (or revert): what the host already has.
        self.manifest: dict[str, Signature] = {}
        #: Who renews this overlay between session cells (None: it is kept for the session).
        self.keeper = keeper
        #: Regular files the sandbox wrote that the host has (relative path: size): they stay
        #: in the quota after a renewal empties the upper layer.
        self.held: dict[str, int] = {}
        #: Why renewing failed (then the overlay is kept): told once on the run's stderr.
        self.renew_error = ""

    def protected(self, paths: Iterable[str]) -> None:
        """Host paths never to write or delete (inside this directory: relative to it). This
        directory itself among them (the host imports from it): its Python code only."""
        base = self.host.rstrip("/") + "/"
        paths = list(paths)
        self.protect = tuple(sorted({p[len(base):] for p in paths if p.startswith(base)}))
        self.guard_code = any(p.rstrip("/") == base[:-1] for p in paths)

    def close(self) -> None:
        for fd in (self.upper, self.merged):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.upper = self.merged = -1
        if self.keeper is not None:
            self.keeper.close()

    def renew(self) -> bool:
        """A fresh overlay in the sandbox for the next cell (see ``mounts.renew``): its lookups
        of the host directory start anew. Call only when the host has everything the session
        keeps (after a kept cell's copy-back) or the rest is to be dropped (a rolled-back
        cell). False if this sandbox cannot renew it (no keeper, or it failed: ``keeper.error``;
        the overlay is then kept)."""
        if self.keeper is None:
            return False
        # By its parent: this side holds nothing of the old overlay while it is replaced.
        parent = os.open("..", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.merged)
        name = os.path.basename(self.host.rstrip("/"))
        os.close(self.merged)
        try:
            fresh = self.keeper.renew(self.host, self.upper, parent, sum(self.held.values()))
            if fresh is None:  # kept from now on, for the whole session (said once, on stderr)
                self.renew_error, self.keeper = self.keeper.error or "no keeper", None
                self.merged = os.open(name, _DIR, dir_fd=parent)  # the top one: still the old
                return False
        finally:
            os.close(parent)
        os.close(self.upper)
        self.upper, self.merged = fresh
        self.manifest = {}
        return True

    # -- the two directions ----------------------------------------------------------------------
    def sync(self) -> Report:
        """Make the host directory match the sandbox's view for everything changed since the
        last call: the end of a run or a kept cell."""
        before = self.manifest
        guard = is_code if self.guard_code else None
        report = self._with_host(lambda host, report: self._apply(
            self.merged, host, report, symlinks=False, guard=guard))[0]
        if self.keeper is not None:
            self._hold(before)
        return report

    def _hold(self, before: dict[str, Signature]) -> None:
        """Update ``held`` from what this copy-back changed: files written count with their
        size, deleted entries (whiteouts) and what an opaque directory hides no longer."""
        gone = []
        for rel, sig in self.manifest.items():
            if before.get(rel) == sig:
                continue
            if stat.S_ISREG(sig[0]):
                self.held[rel] = sig[2]
            elif stat.S_ISCHR(sig[0]):
                gone.append(rel)
            elif stat.S_ISDIR(sig[0]) and _opaque(self.upper, rel):
                gone.extend(r for r in self.held
                            if r.startswith(rel + "/") and r not in self.manifest)
        for rel in gone:
            self.held.pop(rel, None)
            for below in [r for r in self.held if r.startswith(rel + "/")]:
                del self.held[below]

    def revert(self) -> Report:
        """Undo, in the sandbox's view, everything changed since the last call: a rolled-back
        cell. (Writes through the overlay; restoring a file the cell deleted copies it into
        the upper layer, within the quota.)"""
        report, opened = self._with_host(lambda host, report: self._apply(
            host, self.merged, report, symlinks=True))
        if opened:
            self.manifest = dict(_scan(self.upper))
        return report

    def _with_host(self, apply: Callable[[int, Report], None]) -> tuple[Report, bool]:
        """Run ``apply`` with a descriptor of the host directory; (its report, whether the
        directory could be opened at all)."""
        report = Report()
        try:
            host = os.open(self.host, _DIR)
        except OSError as exc:
            report.errors.append(f"{self.host}: {exc.strerror or exc}")
            return report, False
        try:
            apply(host, report)
        finally:
            os.close(host)
        return report, True

    def _apply(self, source: int, dest: int, report: Report, *, symlinks: bool,
               guard: Guard = None) -> None:
        current = dict(_scan(self.upper))
        changed = {rel for rel, sig in current.items() if self.manifest.get(rel) != sig}
        changed.update(rel for rel in self.manifest if rel not in current)
        done: set[str] = set()  # handled with everything below them
        parents = _Parents(source, dest)
        try:
            for rel in sorted(changed, key=lambda r: r.split("/")):
                parts = rel.split("/")
                if any("/".join(parts[:i]) in done for i in range(1, len(parts))) or (
                        self._is_protected(rel)):
                    continue
                if self._holds_protected(rel):  # never deleted or replaced whole: its changed
                    report.skipped.append(f"{rel} (holds a protected path)")  # entries come
                    continue  # one by one, the protected one never
                if guard is not None and guard(parts[-1]):
                    report.skipped.append(f"{rel} ({CODE_NOTE})")
                    continue
                try:
                    src_parent, dst_parent = parents.get(parts[:-1])
                    if _mirror(src_parent, dst_parent, rel, self.upper, report,
                               symlinks=symlinks, guard=guard):
                        done.add(rel)
                except OSError as exc:
                    report.errors.append(f"{rel}: {exc.strerror or exc}")
        finally:
            parents.close()
        self.manifest = current

    def _is_protected(self, rel: str) -> bool:
        return any(rel == p or rel.startswith(p + "/") for p in self.protect)

    def _holds_protected(self, rel: str) -> bool:
        return any(p.startswith(rel + "/") for p in self.protect)


# -- walking without following -------------------------------------------------------------------
def _scan(upper: int) -> Iterator[tuple[str, Signature]]:
    """Every entry of the upper layer below ``upper``: (relative path, signature). Walked with
    a descriptor per directory (the sandbox may swap a directory for a symlink meanwhile),
    iteratively, at most ``MAX_DEPTH`` deep."""
    stack = [("", os.dup(upper), 0)]
    while stack:
        prefix, fd, depth = stack.pop()
        try:
            with os.scandir(fd) as entries:
                found = [(e.name, e.stat(follow_symlinks=False)) for e in entries]
            for name, st in found:
                rel = f"{prefix}/{name}" if prefix else name
                yield rel, (st.st_mode, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
                if stat.S_ISDIR(st.st_mode) and depth < MAX_DEPTH:
                    with contextlib.suppress(OSError):
                        stack.append((rel, os.open(name, _DIR, dir_fd=fd), depth + 1))
        except OSError:
            continue
        finally:
            os.close(fd)


def _open_dir(root: int, parts: list[str]) -> int | None:
    """A descriptor of ``root``/``parts``, walked one component at a time without following
    symlinks; None when a component is missing or not a directory."""
    fd = os.dup(root)
    for part in parts:
        try:
            nxt = os.open(part, _DIR, dir_fd=fd)
        except OSError:
            os.close(fd)
            return None
        os.close(fd)
        fd = nxt
    return fd


def _lstat(dirfd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _opaque(upper: int, rel: str) -> bool:
    fd = _open_dir(upper, rel.split("/"))
    if fd is None:
        return False
    try:
        return os.getxattr(fd, _OPAQUE) == b"y"
    except OSError:
        return False
    finally:
        os.close(fd)


class _Parents:
    """The source and destination directories of the entries being mirrored, opened once per
    directory (siblings come one after another: the changes are visited in sorted order, a
    directory before what is in it, so a directory is opened only after it was mirrored)."""

    def __init__(self, source: int, dest: int) -> None:
        self.roots = (source, dest)
        self.key: list[str] | None = None
        self.fds: tuple[int | None, int | None] = (None, None)

    def get(self, parts: list[str]) -> tuple[int | None, int | None]:
        if parts != self.key:
            self.close()
            self.key = parts
            self.fds = (_open_dir(self.roots[0], parts), _open_dir(self.roots[1], parts))
        return self.fds

    def close(self) -> None:
        for fd in self.fds:
            if fd is not None:
                os.close(fd)
        self.key, self.fds = None, (None, None)


def _mirror(src_parent: int | None, dst_parent: int | None, rel: str, upper: int,
            report: Report, *, symlinks: bool, guard: Guard = None) -> bool:
    """Make ``rel`` in ``dst_parent`` what it is in ``src_parent`` (None: that directory does
    not exist). True when everything below ``rel`` was handled too (deleted, copied whole).
    ``guard``: names below ``rel`` never changed on the host (kept, and reported)."""
    name = rel.rsplit("/", 1)[-1]
    if dst_parent is None:  # the destination's parent is gone: nothing to put it in
        report.errors.append(f"{rel}: its directory no longer exists")
        return True
    src = _lstat(src_parent, name) if src_parent is not None else None
    dst = _lstat(dst_parent, name)
    if src is None or (stat.S_ISCHR(src.st_mode) and src.st_rdev == 0):  # deleted
        if dst is not None:
            _remove(dst_parent, name, dst, report, guard)
            report.deleted += 1
        return True
    if stat.S_ISDIR(src.st_mode):
        if dst is not None and stat.S_ISDIR(dst.st_mode):
            if dst.st_mode != src.st_mode:
                os.chmod(name, stat.S_IMODE(src.st_mode) & 0o777, dir_fd=dst_parent)
            if not _opaque(upper, rel):
                return False  # its changed entries come one by one
            _copy_tree(src_parent, dst_parent, name, report, symlinks=symlinks, prune=True,
                       guard=guard)
            return True
        if dst is not None:
            _remove(dst_parent, name, dst, report, guard)
        _copy_tree(src_parent, dst_parent, name, report, symlinks=symlinks, guard=guard)
        return True
    if not (stat.S_ISREG(src.st_mode) or (symlinks and stat.S_ISLNK(src.st_mode))):
        # The sandbox replaced the entry by something never copied: gone on the host too.
        report.skipped.append(f"{rel} ({_kind(src.st_mode)})")
        if dst is not None:
            _remove(dst_parent, name, dst, report, guard)
            report.deleted += 1
        return True
    if dst is not None and stat.S_ISDIR(dst.st_mode):
        if not _remove(dst_parent, name, dst, report, guard):
            return True  # it holds code the host imports: kept (reported)
        dst = None
    _copy_entry(src_parent, dst_parent, name, src, report, symlinks=symlinks, existing=dst)
    return True


def _remove(parent: int, name: str, st: os.stat_result, report: Report, guard: Guard = None,
            depth: int = 0) -> bool:
    """Remove ``name`` from ``parent``; with ``guard``, a directory only as far as it holds no
    guarded name (those are kept with the directories above them, and reported). True when
    it went whole."""
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=parent)
        return True
    if guard is None:
        shutil.rmtree(name, dir_fd=parent)  # fd-based: never follows a symlink out
        return True
    if depth > MAX_DEPTH:
        report.errors.append(f"{name}: more than {MAX_DEPTH} directories deep, kept")
        return False
    whole = True
    fd = os.open(name, _DIR, dir_fd=parent)
    try:
        with os.scandir(fd) as entries:
            found = [(e.name, e.stat(follow_symlinks=False)) for e in entries]
        for child, child_st in found:
            if guard(child):
                whole = False
                report.skipped.append(f"{name}/{child} (kept: {CODE_NOTE})")
            elif not _remove(fd, child, child_st, report, guard, depth + 1):
                whole = False
    finally:
        os.close(fd)
    if whole:
        os.rmdir(name, dir_fd=parent)
    return whole


def _copy_entry(src_parent: int, dst_parent: int, name: str, st: os.stat_result,
                report: Report, *, symlinks: bool, existing: os.stat_result | None) -> None:
    """Copy one non-directory entry over what ``dst_parent`` holds under ``name``
    (``existing``: its lstat, None when nothing). A regular file there is rewritten in place,
    as the code itself would have written it (its inode and owner stay); anything else there
    (a symlink, a file with other hard links) is removed first and the file made anew."""
    if stat.S_ISLNK(st.st_mode) and symlinks:
        target = os.readlink(name, dir_fd=src_parent)
        tmp = _temp_name(name)
        os.symlink(target, tmp, dir_fd=dst_parent)
        os.rename(tmp, name, src_dir_fd=dst_parent, dst_dir_fd=dst_parent)
        report.copied += 1
        return
    if not stat.S_ISREG(st.st_mode):
        report.skipped.append(f"{name} ({_kind(st.st_mode)})")
        return
    # O_NONBLOCK: a fifo swapped in since the lstat must not block the supervisor's open
    src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                  dir_fd=src_parent)
    try:
        opened = os.fstat(src)
        if not stat.S_ISREG(opened.st_mode):  # swapped between the lstat and the open
            report.skipped.append(f"{name} ({_kind(opened.st_mode)})")
            return
        # A file with other hard links (maybe outside the working directory) is replaced,
        # never written through.
        in_place = (existing is not None and stat.S_ISREG(existing.st_mode)
                    and existing.st_nlink == 1)
        if existing is not None and not in_place:
            os.unlink(name, dir_fd=dst_parent)
        flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | (
            os.O_TRUNC if in_place else os.O_CREAT | os.O_EXCL)
        dst = os.open(name, flags, 0o600, dir_fd=dst_parent)
        try:
            now = os.fstat(dst)
            if in_place and not (stat.S_ISREG(now.st_mode) and now.st_nlink == 1):
                raise OSError(errno.EINVAL, "changed on the host while being copied")
            report.bytes += _copy_data(src, dst, opened.st_size)
            os.fchmod(dst, stat.S_IMODE(opened.st_mode) & 0o777)  # never setuid/setgid
            os.utime(dst, ns=(opened.st_atime_ns, opened.st_mtime_ns))
        except BaseException:
            if not in_place:
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=dst_parent)
            raise
        finally:
            os.close(dst)
        report.copied += 1
    finally:
        os.close(src)


def _copy_data(src: int, dst: int, size: int) -> int:
    """Copy the file's data, keeping its holes (``dst`` is new or truncated): a sparse file
    takes almost no room on the sandbox's tmpfs, so the quota would not bound what writing
    it out in full costs the host (a cell could make many files of max_file_size_mb each for
    a few kilobytes). Returns the bytes of data copied."""
    copied = 0
    position = 0
    while position < size:
        try:
            start = os.lseek(src, position, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole from here to the end
                break
            if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                raise
            start = position  # no hole reporting here: copy it all
            end = size
        else:
            end = min(os.lseek(src, start, os.SEEK_HOLE), size)
        copied += _copy_range(src, dst, start, end)
        position = end
    os.ftruncate(dst, size)
    return copied


def _copy_range(src: int, dst: int, start: int, end: int) -> int:
    """Bytes ``start``..``end`` of ``src`` to the same place in ``dst``: in the kernel
    (sendfile: the upper layer is a tmpfs, the host another filesystem, so copy_file_range
    would refuse), with pread/pwrite where sendfile cannot."""
    copied = 0
    os.lseek(dst, start, os.SEEK_SET)
    try:
        while start + copied < end and (
                n := os.sendfile(dst, src, start + copied, min(end - start - copied, 1 << 24))):
            copied += n
        return copied
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP) or copied:
            raise
    while start + copied < end and (
            chunk := os.pread(src, min(end - start - copied, 1 << 20), start + copied)):
        os.pwrite(dst, chunk, start + copied)
        copied += len(chunk)
    return copied


def _copy_tree(src_parent: int, dst_parent: int, name: str, report: Report, *,
               symlinks: bool, prune: bool = False, depth: int = 0, guard: Guard = None) -> None:
    """Copy directory ``name`` with everything in it (``prune``: into an existing directory,
    removing what the source does not have). ``guard``: names neither copied nor removed."""
    if depth > MAX_DEPTH:
        report.errors.append(f"{name}: more than {MAX_DEPTH} directories deep, not copied")
        return
    src = os.open(name, _DIR, dir_fd=src_parent)
    try:
        st = os.fstat(src)
        if not prune:
            os.mkdir(name, stat.S_IMODE(st.st_mode) & 0o777 | 0o700, dir_fd=dst_parent)
            report.copied += 1
        dst = os.open(name, _DIR, dir_fd=dst_parent)
        try:
            with os.scandir(src) as entries:
                found = {e.name: e.stat(follow_symlinks=False) for e in entries}
            if prune:
                with os.scandir(dst) as entries:
                    gone = [(e.name, e.stat(follow_symlinks=False)) for e in entries
                            if e.name not in found]
                for child, child_st in gone:
                    if guard is not None and guard(child):
                        report.skipped.append(f"{name}/{child} (kept: {CODE_NOTE})")
                        continue
                    _remove(dst, child, child_st, report, guard)
                    report.deleted += 1
            for child, child_st in found.items():
                if guard is not None and guard(child):
                    report.skipped.append(f"{name}/{child} ({CODE_NOTE})")
                    continue
                existing = _lstat(dst, child) if prune else None
                if stat.S_ISDIR(child_st.st_mode):
                    if existing is not None and not _remove(dst, child, existing, report, guard):
                        continue  # it holds code the host imports: kept as it is
                    _copy_tree(src, dst, child, report, symlinks=symlinks, depth=depth + 1,
                               guard=guard)
                else:
                    if existing is not None and stat.S_ISDIR(existing.st_mode):
                        if not _remove(dst, child, existing, report, guard):
                            continue
                        existing = None
                    _copy_entry(src, dst, child, child_st, report, symlinks=symlinks,
                                existing=existing)
            os.chmod(dst, stat.S_IMODE(st.st_mode) & 0o777)
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _temp_name(name: str) -> str:
    return f".{name[:200]}.acs-{secrets.token_hex(4)}"


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "symlink, not copied"
    if stat.S_ISFIFO(mode):
        return "fifo, not copied"
    if stat.S_ISSOCK(mode):
        return "socket, not copied"
    return "special file, not copied"
