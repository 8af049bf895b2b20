"""The sandbox interface, and the audited path every execution takes through it."""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from agenticraft.sandbox.result import ExecutionResult, Output
from agenticraft.sandbox.types import SandboxType
from agenticraft.security.context import SecurityContext
from agenticraft.wire.errors import ConfigurationError

if TYPE_CHECKING:
    from agenticraft.sandbox.manager import SandboxManager

OutputCallback = Callable[[Output], Any]


class Sandbox(abc.ABC):
    """A place to run code under a ``SecurityContext``.

    ``execute_code`` is the same for every sandbox: authorize through the manager (the policy),
    run, audit the outcome. Subclasses implement only ``_run``.
    """

    sandbox_type: ClassVar[SandboxType]

    def __init__(self, manager: SandboxManager) -> None:
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
                             audit_extra: Mapping[str, Any] | None = None,
                             audit: bool = True) -> ExecutionResult:
        """Run with a context the caller already got from ``manager.authorize`` (audited).

        For callers (tools, workflows) that authorize once for a larger action. ``audit=False``
        is for callers that write their own, richer record of the run (the kernel records a
        ``%%secure`` cell with its kernel id), as with ``ProcessSession.run``.
        """
        if not audit:
            return await self._run(code, ctx, on_output)
        return await self.manager.audited(self.sandbox_type.value, code, ctx,
                                          lambda: self._run(code, ctx, on_output),
                                          extra=audit_extra)

    @abc.abstractmethod
    async def _run(self, code: str, context: SecurityContext,
                   on_output: OutputCallback | None) -> ExecutionResult:
        """Run already-authorized code; raise ResourceLimitExceeded for a limit."""


def code_digest(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest()


