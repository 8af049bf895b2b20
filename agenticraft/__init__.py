"""AgentiCraft Secure: run untrusted Python for notebooks and AI agents inside a real sandbox."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"  # the one version: pyproject.toml and agenticraft_kernel read it here
__all__ = ["Agent", "__version__"]


def __getattr__(name: str) -> Any:
    # The agent API is imported lazily so that ``import agenticraft.security`` stays light.
    if name == "Agent":
        from agenticraft.agents.agent import Agent
        return Agent
    raise AttributeError(f"module 'agenticraft' has no attribute {name!r}")
