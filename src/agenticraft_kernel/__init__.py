"""AgentiCraft Secure for Jupyter: the secure kernel, the %%secure magic, the panel, doctor."""

from __future__ import annotations

__all__ = ["__version__", "load_ipython_extension"]

__version__ = "0.1.0"


def load_ipython_extension(ipython):  # type: ignore[no-untyped-def]
    """``%load_ext agenticraft_kernel``: registers the magics (added by the magics module)."""
    from .magics import load_ipython_extension as load
    load(ipython)
