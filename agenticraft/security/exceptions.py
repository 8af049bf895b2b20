"""The specification's import path for the exceptions (``agenticraft.security.exceptions``).

They are defined in :mod:`agenticraft.wire.errors` because both sides of the sandbox raise them.
"""

from __future__ import annotations

from agenticraft.wire.errors import (
    ConfigurationError,
    PermissionDenied,
    ResourceLimitExceeded,
    SandboxError,
    SandboxUnavailable,
    SecurityException,
    SecurityViolation,
    limit_message,
)

__all__ = ["ConfigurationError", "PermissionDenied", "ResourceLimitExceeded", "SandboxError",
           "SandboxUnavailable", "SecurityException", "SecurityViolation", "limit_message"]
