"""AgentiCraft Secure for Jupyter: the secure kernel, the %%secure magic, the panel, doctor."""

from __future__ import annotations

from agenticraft import __version__  # one version for both packages (pyproject reads it there)

__all__ = ["__version__", "load_ipython_extension"]


def load_ipython_extension(ipython):  # type: ignore[no-untyped-def]
    """``%load_ext agenticraft_kernel``: registers the magics in a stock kernel. Inside the secure
    kernel's sandbox the magics are built in, and the host-side extension is never imported."""
    session = getattr(getattr(ipython, "kernel", None), "session", None)
    if type(session).__module__.startswith("agenticraft_kernel.worker"):  # the sandbox's shell
        print("AgentiCraft Secure: %%secure, %secure_status, %secure_audit and %secure_panel "
              "are built into this kernel.")
        return
    from agenticraft_kernel.extension import load_ipython_extension as load
    load(ipython)
