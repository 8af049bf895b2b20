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


def file_refusal(exc: BaseException, limits: Mapping[str, Any]) -> str | None:
    """The explanation for ``exc``, or None when the sandbox did not refuse it."""
    if not isinstance(exc, OSError) or not isinstance(exc.filename, str):
        return None
    path = os.path.abspath(exc.filename)
    files = bool(limits.get("filesystem_access"))
    if exc.errno == errno.ENOENT and mounts.hidden(path):
        return ("not visible in the sandbox: only Python's own files and, with "
                "filesystem_access, the working directory exist inside it"
                + ("" if files else "; filesystem_access is off"))
    if exc.errno == errno.EROFS:
        return ("read-only in the sandbox: write to /tmp or the working directory, which is "
                "writable with filesystem_access and the 'write' permission")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return ("refused by the sandbox (filesystem_access"
                + (" and the 'write' permission decide what is reachable)" if files
                   else " is off: only Python's own files and /tmp are reachable)"))
    return None
