"""The sandbox interface: run authorized code, and the audited path the agent API takes."""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar, Protocol

from agenticraft.sandbox.result import ExecutionResult, Output
from agenticraft.sandbox.types import SandboxType
from agenticraft.security.context import SecurityContext
from agenticraft.wire.errors import ConfigurationError

OutputCallback = Callable[[Output], Any]


class SandboxOwner(Protocol):
    """What a sandbox needs of the ``SandboxManager`` that created it (declared here so that
    this module does not import the manager, which imports it)."""

    audit: Any
    policy: Any
    process_preload: tuple[str, ...]

    def authorize(self, context: SecurityContext | Mapping[str, Any] | None, permission: str, *,
                  sandbox_type: str | None = None, action: str = "",
                  limit_overrides: Mapping[str, Any] | None = None,
                  record_allowed: bool = True) -> SecurityContext: ...

    async def audited(self, sandbox_type: str, code: str, ctx: SecurityContext,
                      run: Callable[[], Awaitable[ExecutionResult]],
                      extra: Mapping[str, Any] | None = None) -> ExecutionResult: ...


class Sandbox(abc.ABC):
    """A place to run code under a ``SecurityContext``.

    Two ways in, by who writes the audit record: ``run`` only runs (the caller owns the record,
    as the kernel does for a cell); ``execute_code`` and ``run_authorized`` write the execution
    record through ``SandboxManager.audited``. Subclasses implement only ``run``.
    """

    sandbox_type: ClassVar[SandboxType]

    def __init__(self, manager: SandboxOwner) -> None:
        self.manager = manager

    @classmethod
    def probe(cls) -> list[str]:
        """What this host lacks for this sandbox ([] when it can run)."""
        return []

    async def start(self) -> None:
        """Warm up (start worker processes). Called by the manager."""

    async def close(self) -> None:
        """Release every process and file this sandbox holds."""

    def host_report(self) -> Mapping[str, str]:
        """Which mechanism enforces which limit here (``ExecutionResult.enforced``)."""
        return {}

    async def execute_code(self, code: str, context: SecurityContext | Mapping[str, Any] | None
                           = None, *, on_output: OutputCallback | None = None) -> ExecutionResult:
        """Run ``code`` under ``context`` (resolved through the administrator's policy)."""
        if not isinstance(code, str):
            raise ConfigurationError(f"code must be a string, not {type(code).__name__}")
        ctx = self.manager.authorize(context, "execute", sandbox_type=self.sandbox_type.value,
                                     action="execute_code", record_allowed=False)
        return await self.run_authorized(code, ctx, on_output=on_output)

    async def run_authorized(self, code: str, ctx: SecurityContext, *,
                             on_output: OutputCallback | None = None,
                             audit_extra: Mapping[str, Any] | None = None) -> ExecutionResult:
        """Run with a context the caller already got from ``manager.authorize``; audited.

        For callers (tools, workflows, the stock-kernel magic) that authorize once for a
        larger action; ``audit_extra`` goes into the execution record.
        """
        return await self.manager.audited(self.sandbox_type.value, code, ctx,
                                          lambda: self.run(code, ctx, on_output),
                                          extra=audit_extra)

    @abc.abstractmethod
    async def run(self, code: str, context: SecurityContext,
                  on_output: OutputCallback | None = None) -> ExecutionResult:
        """Run already-authorized code and return its outcome; write no audit record.
        Raises ResourceLimitExceeded for a limit, SecurityViolation for the code policy."""
