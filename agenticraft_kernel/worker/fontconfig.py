"""Worker side: a fontconfig configuration the sandbox can read.

matplotlib lists fonts with ``fc-list``; fontconfig reads ``/etc/fonts/fonts.conf``, which the
sandbox may hide, and then prints "Fontconfig error: Cannot load default config file" into the
first cell that plots (stock ipykernel prints nothing). When the system file cannot be read,
point ``FONTCONFIG_FILE`` at a minimal one in the worker's home (its private, writable
directory): the usual font directories (fontconfig skips those it cannot read) and a cache
directory of its own.
"""

from __future__ import annotations

import os
from xml.sax.saxutils import escape

SYSTEM_CONFIG = "/etc/fonts/fonts.conf"
FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.local/share/fonts", "~/.fonts")


def readable(path: str) -> bool:
    try:
        with open(path, "rb"):
            return True
    except OSError:
        return False


def ensure_fontconfig() -> str | None:
    """Set ``FONTCONFIG_FILE`` if needed; returns the file written, if any."""
    if os.environ.get("FONTCONFIG_FILE") or readable(SYSTEM_CONFIG):
        return None
    folder = os.path.join(os.path.expanduser("~"), ".cache", "agenticraft-fontconfig")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        return None
    dirs = "".join(f"<dir>{escape(os.path.expanduser(d))}</dir>" for d in FONT_DIRS)
    path = os.path.join(folder, "fonts.conf")
    with open(path, "w", encoding="utf-8") as f:
        f.write('<?xml version="1.0"?><!DOCTYPE fontconfig SYSTEM "urn:fontconfig:fonts.dtd">'
                f"<fontconfig>{dirs}<cachedir>{escape(folder)}/cache</cachedir></fontconfig>\n")
    os.environ["FONTCONFIG_FILE"] = path
    return path
