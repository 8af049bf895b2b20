"""Exceptions of the security layer.

Every message says what happened and how to change it, because the people who read them are
students and agent developers, not the authors of the sandbox.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agenticraft.wire.limits import Usage


class SecurityException(Exception):
    """Base of every security error raised by AgentiCraft."""


class ConfigurationError(SecurityException, ValueError):
    """A limit, permission or configuration value is malformed or unknown."""


class PermissionDenied(SecurityException):
    """The caller lacks a permission, or asked for more than the administrator's policy allows."""

    def __init__(self, message: str, *, permission: str | None = None,
                 user_id: str | None = None, ceiling: Any = None) -> None:
        super().__init__(message)
        self.permission = permission
        self.user_id = user_id
        self.ceiling = ceiling


class ResourceLimitExceeded(SecurityException):
    """Code was stopped because it went over a resource limit.

    ``usage`` is what the stopped run used (None when it was stopped before it started, or
    inside the sandbox); ``stdout``/``stderr`` are the output it printed before it was stopped.
    """

    def __init__(self, limit: str, value: Any = None, allowed: Any = None,
                 message: str | None = None, *, rolled_back: bool = False,
                 usage: Usage | None = None, stdout: str = "", stderr: str = "") -> None:
        self.limit = limit
        self.value = value
        self.allowed = allowed
        self.rolled_back = rolled_back
        self.usage = usage
        self.stdout = stdout
        self.stderr = stderr
        if message is None:
            message = limit_message(limit, value, allowed)
        if rolled_back:
            message += " The session was rolled back to its state before this run."
        super().__init__(message)


class SandboxUnavailable(SecurityException):
    """Sandbox not available: this host cannot run the requested sandbox type."""

    def __init__(self, sandbox_type: str, missing: list[str] | tuple[str, ...] = (),
                 suggestion: str = "") -> None:
        self.sandbox_type = sandbox_type
        self.missing = list(missing)
        self.suggestion = suggestion
        text = f"Sandbox not available: {sandbox_type!r} cannot run on this host"
        if self.missing:
            text += " (missing: " + ", ".join(self.missing) + ")"
        text += "."
        if suggestion:
            text += " " + suggestion
        super().__init__(text)


class SandboxError(SecurityException):
    """The sandbox machinery itself failed (a worker crashed, the protocol was violated)."""


class NothingToUndo(SandboxError):
    """A session was asked to undo its last run but keeps no state from before it (none yet,
    undone already, or lost with the session); the message says which. Nothing changed."""


class ChannelAbuse(SandboxError):
    """The sandboxed code broke the frame protocol on purpose or by accident (garbage, too
    deep, too many frames or control events): its run was killed."""


_HOW_TO_CHANGE = {
    "timeout_seconds": "raise timeout_seconds (%%secure --timeout) within the administrator's "
                       "ceiling, or make the code finish sooner",
    "memory_mb": "raise memory_mb (%%secure --memory) within the administrator's ceiling, or use "
                 "less memory",
    "cpu_percent": "raise cpu_percent within the administrator's ceiling",
    "max_file_size_mb": "raise max_file_size_mb within the administrator's ceiling, or write "
                        "smaller files",
    "max_output_bytes": "raise max_output_bytes within the administrator's ceiling, or print less",
    "max_processes": "raise max_processes within the administrator's ceiling, or start fewer "
                     "processes and threads",
    "recursion": "use less recursion",
    "value_size": "compute smaller values",
}


#: ``value`` of a max_file_size_mb violation that filled the total write quota (ENOSPC).
QUOTA_FULL = "quota"
#: The total write quota of a sandbox (its private tmpfs holding /tmp, /dev/shm, scratch and the
#: upper layer of a writable working directory, or the scratch watchdog without one) is this
#: many times max_file_size_mb, per one-shot run or per session.
QUOTA_FACTOR = 4


def quota_exceeded(max_file_size_mb: Any) -> ResourceLimitExceeded:
    """ENOSPC inside the sandbox: its total write quota is full (a full host disk looks the
    same, and is reported the same way)."""
    allowed = (QUOTA_FACTOR * max_file_size_mb
               if isinstance(max_file_size_mb, int | float) else None)
    return ResourceLimitExceeded("max_file_size_mb", QUOTA_FULL, allowed)


def limit_message(limit: str, value: Any, allowed: Any) -> str:
    """One line: which limit, what value, how to change it."""
    unit = {"timeout_seconds": " s", "memory_mb": " MB", "max_file_size_mb": " MB",
            "max_output_bytes": " bytes", "cpu_percent": " %"}.get(limit, "")
    text = f"Resource limit exceeded: {limit}"
    if limit == "max_file_size_mb" and value == QUOTA_FULL:
        text += (f" (the sandbox's total write quota{f' of {allowed} MB' if allowed else ''}, "
                 f"{QUOTA_FACTOR} x max_file_size_mb for /tmp, /dev/shm, scratch and the "
                 "changes to a writable working directory together, "
                 "is full; "
                 "deleted files still open count)")
    elif allowed is not None:
        text += f" (allowed {allowed}{unit}"
        if value is not None:
            text += f", reached {value}{unit}"
        text += ")"
    hint = _HOW_TO_CHANGE.get(limit)
    text += "." + (f" To fix it, {hint}." if hint else "")
    return text


class SecurityViolation(PermissionDenied):
    """Code tried something the sandbox's code policy forbids (a private attribute, an import).

    ``lineno`` and ``construct`` say where and what; the message says why and what to do.
    """

    def __init__(self, message: str, *, lineno: int | None = None,
                 construct: str | None = None) -> None:
        super().__init__(message, permission="code_policy")
        self.lineno = lineno
        self.construct = construct
