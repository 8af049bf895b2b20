"""What a sandbox leaves outside its private root, and how it is removed when its owner died.

Inside a worker everything it writes lives in a tmpfs of its own mount namespace and vanishes
with it. Outside remain: the supervisor's scratch root (a directory of empty mount points,
``<tmp>/agenticraft-<supervisor pid>-<random>``) and one cgroup unit per worker
(``agenticraft/<zygote pid>-<worker pid>``: in each v1 controller as root, in the delegated v2
subtree for an unprivileged user). The zygote
removes both when it ends,
including when its parent was killed with SIGKILL (its parent-death signal); what a machine crash
or a SIGKILL of the zygote itself leaves is reaped by the next sandbox that starts.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path

PREFIX = "agenticraft-"
_SCRATCH = re.compile(r"^agenticraft-(\d+)-[A-Za-z0-9_]+$")
_CGROUP = re.compile(r"^(\d+)-(\d+)$")


def scratch_prefix() -> str:
    """``mkdtemp`` prefix naming its owner, so a later start-up can tell it is abandoned."""
    return f"{PREFIX}{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def reap(tmpdir: str | None = None, cgroups: Path | None = None) -> list[str]:
    """Remove this user's scratch roots and cgroup units whose owner process is dead
    (``cgroups``: one directory to look in; by default every controller's unit directory)."""
    removed: list[str] = []
    base = tmpdir or tempfile.gettempdir()
    uid = os.getuid()
    with contextlib.suppress(OSError), os.scandir(base) as entries:
        for entry in entries:
            match = _SCRATCH.match(entry.name)
            if not match or int(match.group(1)) == os.getpid():
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if st.st_uid != uid or not entry.is_dir(follow_symlinks=False):
                continue
            if not _alive(int(match.group(1))):
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(entry.path)
    for directory in [cgroups] if cgroups is not None else _unit_directories():
        with contextlib.suppress(OSError), os.scandir(directory) as entries:
            for entry in entries:
                match = _CGROUP.match(entry.name)
                if match and not _alive(int(match.group(1))):
                    with contextlib.suppress(OSError):
                        os.rmdir(entry.path)  # refused while a process is still inside
                        removed.append(entry.path)
    return removed


def _unit_directories() -> list[Path]:
    from agenticraft.jail.confine.cgroups import probe_v2, v1_bases
    found = list(v1_bases().values())
    v2 = probe_v2()
    if v2.get("available"):
        found.extend(Path(base) for base in v2["bases"].values())
    return found
