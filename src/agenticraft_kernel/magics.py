"""IPython magics of AgentiCraft Secure (``%%secure`` arrives with a later issue)."""

from __future__ import annotations

from typing import Any


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext agenticraft_kernel``: nothing is registered yet; loading must not fail."""
