"""SandboxManager: owns the policy, settings, audit log and the sandboxes of one host process."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from agenticraft.sandbox.base import Sandbox
from agenticraft.sandbox.result import ExecutionResult
from agenticraft.sandbox.types import SandboxType
from agenticraft.security import records
from agenticraft.security.audit import AuditLog
from agenticraft.security.config import Settings, load_settings
from agenticraft.security.context import SecurityContext
from agenticraft.security.policy import Policy, load_policy
from agenticraft.wire.errors import (
    PermissionDenied,
    ResourceLimitExceeded,
    SandboxUnavailable,
    SecurityViolation,
)


def _sandbox_classes() -> dict[SandboxType, type[Sandbox]]:
    from agenticraft.sandbox.container import ContainerSandbox
    from agenticraft.sandbox.process import ProcessSandbox
    from agenticraft.sandbox.restricted import RestrictedSandbox
    return {SandboxType.PROCESS: ProcessSandbox, SandboxType.RESTRICTED: RestrictedSandbox,
            SandboxType.CONTAINER: ContainerSandbox}


class NullAuditLog:
    """Stands in when ``enable_audit_logging`` is off: records nothing."""

    path = None

    def record(self, event: dict[str, Any]) -> dict[str, Any]:
        return event


class SandboxManager:
    """Creates sandboxes and is the single door through which a request is authorized.

    ``await manager.initialize()`` probes the host; ``await manager.get_sandbox(type)`` returns
    a started sandbox (``SandboxUnavailable`` if this host cannot run it).
    """

    def __init__(self, policy: Policy | None = None, settings: Settings | None = None,
                 audit_log: AuditLog | str | Path | None = None, *,
                 working_dir: str | Path | None = None,
                 process_preload: tuple[str, ...] = (),
                 egress_resolver: Any = None) -> None:
        self.policy = policy if policy is not None else load_policy()
        self.settings = settings if settings is not None else load_settings()
        if isinstance(audit_log, AuditLog | NullAuditLog):
            self.audit = audit_log
        elif audit_log is not None:
            self.audit = AuditLog(audit_log)
        elif self.settings.enable_audit_logging:
            self.audit = AuditLog(self.settings.audit_log_path)
        else:
            self.audit = NullAuditLog()
        self.working_dir = str(Path(working_dir or os.getcwd()).resolve())
        self.process_preload = process_preload  # modules the zygote imports before forking
        # How egress proxies resolve names (sandbox.egress.Resolver; None: the host's resolver).
        self.egress_resolver = egress_resolver
        self._sandboxes: dict[SandboxType, Sandbox] = {}
        self._missing: dict[SandboxType, list[str]] = {}
        self._lock = threading.Lock()  # guards the dict only; never held across an await
        self.initialized = False

    # -- lifecycle ------------------------------------------------------------------------------
    async def initialize(self) -> None:
        """Probe which sandbox types this host can run (cheap; workers start on first use)."""
        for kind, cls in _sandbox_classes().items():
            self._missing[kind] = cls.probe()
        self.initialized = True

    def available_types(self) -> list[SandboxType]:
        if not self.initialized:
            self._missing = {k: c.probe() for k, c in _sandbox_classes().items()}
            self.initialized = True
        return [k for k, missing in self._missing.items() if not missing]

    async def get_sandbox(self, sandbox_type: SandboxType | str | None = None) -> Sandbox:
        kind = SandboxType.parse(sandbox_type or self.default_sandbox_type)
        if not self.initialized:
            await self.initialize()
        with self._lock:
            sandbox = self._sandboxes.get(kind)
            if sandbox is None:
                missing = self._missing.get(kind, [])
                if missing:
                    other = [t.value for t in self.available_types()]
                    raise SandboxUnavailable(kind.value, missing, (
                        f"Try sandbox_type={other[0]!r}." if other
                        else "No sandbox can run here."))
                sandbox = self._sandboxes[kind] = _sandbox_classes()[kind](self)
        await sandbox.start()  # idempotent; concurrent callers share one start
        return sandbox

    async def close(self) -> None:
        for sandbox in self._sandboxes.values():
            await sandbox.close()
        self._sandboxes.clear()

    async def __aenter__(self) -> SandboxManager:
        await self.initialize()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def default_sandbox_type(self) -> str:
        return self.settings.default_sandbox_type or self.policy.default_sandbox_type

    # -- authorization and audit ----------------------------------------------------------------
    def authorize(self, context: SecurityContext | Mapping[str, Any] | None, permission: str, *,
                  sandbox_type: str | None = None, action: str = "",
                  limit_overrides: Mapping[str, Any] | None = None,
                  record_allowed: bool = True) -> SecurityContext:
        """Resolve ``context`` through the policy and require ``permission``; audit the decision.

        A context is never trusted because it says it was resolved: every request goes through
        ``Policy.resolve`` here. Denials are always recorded; ``record_allowed=False`` is for
        callers whose own execution record carries the allowed decision (one write, not two).
        """
        request = SecurityContext.from_value(context).copy()
        if sandbox_type and request.sandbox_type is None:
            request.sandbox_type = sandbox_type
        if request.sandbox_type is None:
            request.sandbox_type = self.default_sandbox_type
        defaults = {**self.settings.limit_defaults, **(limit_overrides or {})}
        try:
            ctx = self.policy.resolve(request, limit_defaults=defaults,
                                      working_root=self.working_dir,
                                      image_default=self.settings.container_image)
            ctx.require(permission)
        except PermissionDenied as exc:
            self.audit.record(records.denial(request.user_id, permission, action=action,
                                             reason=str(exc)))
            raise
        if record_allowed:
            self.audit.record(records.authorization(ctx.user_id, permission, True, action=action,
                                                    sandbox_type=ctx.sandbox_type))
        return ctx

    async def audited(self, sandbox_type: str, code: str, ctx: SecurityContext,
                      run: Callable[[], Awaitable[ExecutionResult]],
                      extra: Mapping[str, Any] | None = None) -> ExecutionResult:
        """Run ``run()`` and write the execution (and any violation) to the audit log."""
        digest = records.code_digest(code)
        limits = ctx.resource_limits.as_dict()
        started = time.perf_counter()

        def execution(outcome: str, **fields: Any) -> dict[str, Any]:
            return records.sandbox_execution(ctx.user_id, sandbox_type, digest, outcome,
                                             limits=limits, duration_ms=_ms(started),
                                             **(extra or {}), **fields)

        try:
            result = await run()
        except ResourceLimitExceeded as exc:
            self.audit.record(records.limit_violation(
                ctx.user_id, exc.limit, exc.value, exc.allowed, sandbox_type=sandbox_type,
                code_sha256=digest))
            self.audit.record(execution("limit_exceeded", limit=exc.limit,
                                        rolled_back=exc.rolled_back))
            raise
        except SecurityViolation as exc:
            self.audit.record(records.violation(ctx.user_id, "code_policy", detail=str(exc),
                                                sandbox_type=sandbox_type, code_sha256=digest))
            self.audit.record(execution("denied"))
            raise
        except Exception as exc:
            self.audit.record(execution("sandbox_error", detail=f"{type(exc).__name__}: {exc}"))
            raise
        self.audit.record(execution("ok" if result.success else "error",
                                    error=None if result.error is None else str(result.error)[:500],
                                    usage=result.resource_usage))
        return result


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
