"""The policy layer: who may run what, under which limits, and the record of it.

``SandboxManager`` and ``SandboxType`` live in ``agenticraft.sandbox`` and are re-exported here
because the specification imports them from ``agenticraft.security``.
"""

from __future__ import annotations

from typing import Any

from agenticraft.security.context import SecurityContext
from agenticraft.security.policy import Policy, load_policy
from agenticraft.wire.errors import (
    ConfigurationError,
    PermissionDenied,
    ResourceLimitExceeded,
    SandboxUnavailable,
    SecurityException,
    SecurityViolation,
)
from agenticraft.wire.limits import LIMIT_NAMES, ResourceLimits

__all__ = [
    "LIMIT_NAMES",
    "ConfigurationError",
    "ExecutionResult",
    "PermissionDenied",
    "Policy",
    "ResourceLimitExceeded",
    "ResourceLimits",
    "SandboxManager",
    "SandboxType",
    "SandboxUnavailable",
    "SecurityContext",
    "SecurityException",
    "SecurityViolation",
    "load_policy",
]


def __getattr__(name: str) -> Any:
    if name in ("SandboxManager", "SandboxType", "ExecutionResult"):
        from agenticraft import sandbox
        return getattr(sandbox, name)
    raise AttributeError(f"module 'agenticraft.security' has no attribute {name!r}")
