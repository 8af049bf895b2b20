"""One line saying which limit refused a file operation, and how to change it.

Appended to the message of an ``OSError`` that reaches the top of a run, so a user sees why
``open('data.csv')`` failed instead of a bare "No such file or directory".
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from typing import Any

from agenticraft.jail.confine import mounts

#: Why a host path raises FileNotFoundError inside the sandbox.
HIDDEN_HINT = ("not visible in the sandbox: only Python's own files and, with filesystem_access, "
               "the working directory exist inside it")


def hidden_path(filename: Any) -> bool:
    """A path of the host that the sandbox's private root does not show."""
    return isinstance(filename, str) and mounts.hidden(os.path.abspath(filename))


#: Why opening a terminal (``os.openpty``, ``pty.fork``, ``!cmd``) fails with ENOSPC inside.
TERMINALS_HINT = (f"the sandbox's terminals are all in use: it holds at most {mounts.PTY_MAX} "
                  "at once (each open pseudo-terminal takes one until it is closed)")


def file_refusal(exc: BaseException, limits: Mapping[str, Any]) -> str | None:
    """The explanation for ``exc``, or None when the sandbox did not refuse it."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC and mounts.terminals_full():
        return TERMINALS_HINT
    if not isinstance(exc, OSError) or not isinstance(exc.filename, str):
        return None
    files = bool(limits.get("filesystem_access"))
    if exc.errno == errno.ENOENT and hidden_path(exc.filename):
        return HIDDEN_HINT + ("" if files else "; filesystem_access is off")
    if exc.errno == errno.EROFS and any(mounts.within(os.path.abspath(exc.filename), pin)
                                        for pin in mounts.PINNED):
        return ("read-only in the sandbox: the host's own Python environment (or this package) "
                "lies in the working directory, and a change there would run on the host, "
                "outside any sandbox")
    if exc.errno == errno.EROFS:
        return ("read-only in the sandbox: write to /tmp or the working directory, which is "
                "writable with filesystem_access and the 'write' permission")
    if exc.errno == errno.EXDEV and getattr(exc, "filename2", None) is not None:
        return ("a directory that comes from the host cannot be renamed inside the sandbox "
                "(the writable working directory is an overlay): copy it and delete the old "
                "one, as shutil.move does")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return ("refused by the sandbox (filesystem_access"
                + (" and the 'write' permission decide what is reachable)" if files
                   else " is off: only Python's own files and /tmp are reachable)"))
    return None
