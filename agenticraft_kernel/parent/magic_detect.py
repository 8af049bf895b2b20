"""Which cells the secure kernel's parent answers itself: ``%%secure`` and the view magics.

A cell is the parent's when, after leading blank lines, it starts with ``%%secure`` (the rest of
its first line are the options, the other lines the code) or with ``%secure`` (the cell magic
called as a line magic: a usage error), or when it is exactly one of ``%secure_status``,
``%secure_audit ...``, ``%secure_panel``, ``%secure_undo``. The same magics anywhere else in a
cell reach the sandbox, which answers with a one-line usage error (``KernelAnsweredMagics``).
"""

from __future__ import annotations

import dataclasses
import re

LINE_MAGICS = ("secure_status", "secure_audit", "secure_panel", "secure_undo")
_CELL = re.compile(r"%%secure(?=\s|$)")
_MISUSED = re.compile(r"%secure(?=\s|$)")
_LINE = re.compile(r"%(" + "|".join(LINE_MAGICS) + r")(?=\s|$)")


@dataclasses.dataclass(frozen=True)
class MagicCall:
    """``name`` is ``secure`` (the cell magic), ``secure_line`` (``%secure``, a mistake) or one
    of ``LINE_MAGICS``."""

    name: str
    line: str
    body: str = ""


def detect(code: str) -> MagicCall | None:
    lines = code.split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines:
        return None
    first = lines[0].strip()
    if _CELL.match(first):
        return MagicCall("secure", first[len("%%secure"):].strip(), "\n".join(lines[1:]))
    if _MISUSED.match(first):
        return MagicCall("secure_line", first[len("%secure"):].strip(), "\n".join(lines[1:]))
    match = _LINE.match(first)
    if match and not any(line.strip() for line in lines[1:]):
        return MagicCall(match.group(1), first[match.end():].strip())
    return None
