"""Workflows: a task run as sandboxed, audited steps under the caller's resolved context.

* Running a workflow requires ``execute_workflow``; it also authorizes each of its steps
  (a step does not need ``execute`` on top: the workflow grant covers its own steps).
* Getting the results back requires ``read_results``. Without it the workflow still runs (and
  is audited), but the returned object carries no output: ``result.output is None`` and
  ``result.withheld_reason`` says why.
* Every step runs in a sandbox (a tool in its declared sandbox, a code step in the one it names)
  and leaves ``authorization``, ``execution``, ``tool`` and ``workflow`` audit records.

``workflow.run(task=..., user_context=...)`` returns the result directly in synchronous code;
inside a running event loop it returns an awaitable (``await workflow.run(...)``). ``arun`` is
always a coroutine.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from agenticraft.agents.auth import Authenticator
from agenticraft.agents.tools.base import Tool, ToolRegistry, json_literal
from agenticraft.agents.tools.builtin import default_registry
from agenticraft.agents.tools.runtime import (
    audit_denial,
    authorize,
    default_manager,
    identify,
    invoke_tool,
    maybe_sync,
    run_code,
)
from agenticraft.sandbox.manager import SandboxManager
from agenticraft.sandbox.result import ExecutionResult
from agenticraft.sandbox.types import SandboxType
from agenticraft.security import permissions as perms
from agenticraft.security import records
from agenticraft.security.context import SecurityContext
from agenticraft.wire.errors import (
    ConfigurationError,
    PermissionDenied,
    ResourceLimitExceeded,
)
from agenticraft.wire.limits import coerce_limit

__all__ = ["Step", "StepRecord", "Workflow", "WorkflowResult", "WorkflowRun"]

LIMIT_KEYWORDS = {"memory_limit": "memory_mb", "cpu_limit": "cpu_percent",
                  "timeout": "timeout_seconds"}


@dataclasses.dataclass(frozen=True)
class Step:
    """One step: a registered ``tool`` with ``arguments``, or ``code`` to run.

    ``arguments`` may be a callable ``(run) -> dict`` to use the task or earlier outputs
    (``run.task``, ``run.outputs``). A code step sees ``task`` and ``previous`` (the earlier
    steps' outputs) as variables, and its output is the names it binds.
    """

    name: str
    tool: str | None = None
    code: str | None = None
    arguments: Mapping[str, Any] | Callable[[WorkflowRun], Mapping[str, Any]] | None = None
    sandbox_type: str | None = None

    def __post_init__(self) -> None:
        if (self.tool is None) == (self.code is None):
            raise ConfigurationError(f"Step {self.name!r} needs exactly one of tool= or code=")


@dataclasses.dataclass(frozen=True)
class StepRecord:
    """What happened in a step (names and outcomes only, never the data)."""

    name: str
    kind: str  # "tool" | "code" | "model" | "gather"
    outcome: str
    duration_ms: float = 0.0


@dataclasses.dataclass
class WorkflowResult:
    """The outcome of ``Workflow.run``. ``output`` is None when results were withheld."""

    workflow: str
    task: str
    user_id: str
    output: Any = None
    outputs: dict[str, Any] | None = None
    steps: list[StepRecord] = dataclasses.field(default_factory=list)
    success: bool = True
    error: str | None = None
    withheld_reason: str | None = None

    @property
    def returned(self) -> bool:
        """True when the caller may read the results (``read_results`` granted)."""
        return self.withheld_reason is None

    def __str__(self) -> str:
        if not self.returned:
            return f"[results withheld: {self.withheld_reason}]"
        return str(self.output)


class WorkflowRun:
    """One run of a workflow: how its steps reach tools and the sandbox under the caller's
    context. ``context`` is the resolved context the run was authorized with."""

    def __init__(self, workflow: Workflow, manager: SandboxManager, request: SecurityContext,
                 context: SecurityContext, task: str, options: Mapping[str, Any]) -> None:
        self.workflow = workflow
        self.manager = manager
        self.request = request
        self.context = context
        self.task = task
        self.options = dict(options)
        self.outputs: dict[str, Any] = {}
        self.records: list[StepRecord] = []

    def allows(self, limit: str) -> bool:
        """Whether the resolved context allows ``network_access`` / ``filesystem_access``."""
        return bool(getattr(self.context.resource_limits, limit))

    def record_step(self, step: str, kind: str, outcome: str, started: float,
               **fields: Any) -> StepRecord:
        entry = StepRecord(step, kind, outcome, round((time.perf_counter() - started) * 1000, 3))
        self.records.append(entry)
        self.manager.audit.record(records.workflow_step(self.context.user_id, self.workflow.name,
                                                        step, kind, outcome, **fields))
        return entry

    async def tool(self, step: str, tool: str | Tool, registry: ToolRegistry | None = None,
                   **arguments: Any) -> ExecutionResult:
        """Run a tool as step ``step`` (base permission ``execute_workflow``)."""
        started = time.perf_counter()
        try:
            entry = tool if isinstance(tool, Tool) else (registry or self.workflow.tools).get(tool)
            result = await invoke_tool(
                self.manager, entry, arguments, self.request, permission=perms.EXECUTE_WORKFLOW,
                limits=self.workflow.limits, action=f"workflow:{self.workflow.name}:{step}",
                audit_fields={"workflow": self.workflow.name, "step": step})
        except PermissionDenied as exc:
            self.record_step(step, "tool", "denied", started, reason=str(exc))
            raise
        except ResourceLimitExceeded as exc:
            self.record_step(step, "tool", "limit_exceeded", started, limit=exc.limit)
            raise
        except Exception as exc:
            self.record_step(step, "tool", "error", started, reason=f"{type(exc).__name__}: {exc}")
            raise
        self.record_step(step, "tool", "ok" if result.success else "error", started)
        return result

    async def code(self, step: str, code: str, sandbox_type: str | None = None
                   ) -> ExecutionResult:
        """Run ``code`` as step ``step`` with ``task`` and ``previous`` bound."""
        started = time.perf_counter()
        action = f"workflow:{self.workflow.name}:{step}"
        preamble = (f"task = {json_literal(self.task)}\n"
                    f"previous = {json_literal(self.outputs, what='earlier step outputs')}\n")
        try:
            ctx = authorize(self.manager, self.request, perms.EXECUTE_WORKFLOW,
                            sandbox_type=sandbox_type or self.workflow.sandbox_type,
                            action=action, limits=self.workflow.limits)
            result = await run_code(self.manager, ctx, preamble + code,
                                    extra={"action": action, "workflow": self.workflow.name})
        except PermissionDenied as exc:
            self.record_step(step, "code", "denied", started, reason=str(exc))
            raise
        except ResourceLimitExceeded as exc:
            self.record_step(step, "code", "limit_exceeded", started, limit=exc.limit)
            raise
        except Exception as exc:
            self.record_step(step, "code", "error", started, reason=f"{type(exc).__name__}: {exc}")
            raise
        self.record_step(step, "code", "ok" if result.success else "error", started)
        return result


class Workflow:
    """A named sequence of sandboxed steps. Subclasses override :meth:`execute` (the steps)
    and :meth:`package` (the result object)."""

    def __init__(self, name: str = "workflow", steps: Iterable[Step] = (), *,
                 tools: Iterable[Tool | Callable[..., Any]] = (),
                 manager: SandboxManager | None = None,
                 authenticator: Authenticator | None = None,
                 sandbox_type: str | SandboxType | None = None,
                 memory_limit: int | None = None, cpu_limit: float | None = None,
                 timeout: float | None = None) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ConfigurationError(f"Workflow name must be a non-empty string, not {name!r}")
        self.name = name
        self.steps: list[Step] = list(steps)
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"Workflow {name!r} has duplicate step names: {names}")
        self.tools = default_registry()
        for item in tools:
            self.tools.register(item, replace=True)
        self._manager = manager
        self.authenticator = authenticator
        self._sandbox_type = None if sandbox_type is None else SandboxType.parse(sandbox_type)
        given = {"memory_limit": memory_limit, "cpu_limit": cpu_limit, "timeout": timeout}
        self.limits = {LIMIT_KEYWORDS[k]: coerce_limit(LIMIT_KEYWORDS[k], v)
                       for k, v in given.items() if v is not None}

    @property
    def manager(self) -> SandboxManager:
        return self._manager if self._manager is not None else default_manager()

    @property
    def sandbox_type(self) -> str:
        if self._sandbox_type is not None:
            return self._sandbox_type.value
        return self.manager.default_sandbox_type

    def add_step(self, name: str, *, tool: str | None = None, code: str | None = None,
                 arguments: Any = None, sandbox_type: str | None = None) -> Workflow:
        if any(s.name == name for s in self.steps):
            raise ConfigurationError(f"Workflow {self.name!r} already has a step {name!r}")
        self.steps.append(Step(name, tool=tool, code=code, arguments=arguments,
                               sandbox_type=sandbox_type))
        return self

    # -- running ----------------------------------------------------------------------------
    def run(self, task: str, user_context: Any = None, **options: Any) -> Any:
        """Run the workflow: the result in synchronous code, an awaitable inside an event
        loop (see the module docstring)."""
        return maybe_sync(self.arun(task, user_context, **options))

    async def arun(self, task: str, user_context: Any = None, **options: Any) -> Any:
        if not isinstance(task, str) or not task.strip():
            raise ConfigurationError("task must be a non-empty string")
        manager = self.manager
        request = identify(manager, user_context, authenticator=self.authenticator)
        action = f"workflow:{self.name}"
        ctx = authorize(manager, request, perms.EXECUTE_WORKFLOW, sandbox_type=self.sandbox_type,
                        action=action, limits=self.limits)
        manager.audit.record(records.workflow_started(ctx.user_id, self.name,
                                                      task_chars=len(task)))
        run = WorkflowRun(self, manager, request, ctx, task, options)
        try:
            output, error = await self.execute(run)
        except Exception as exc:
            outcome = ("denied" if isinstance(exc, PermissionDenied) else "limit_exceeded"
                       if isinstance(exc, ResourceLimitExceeded) else "error")
            manager.audit.record(records.workflow_finished(
                ctx.user_id, self.name, outcome, results_returned=False,
                reason=f"{type(exc).__name__}: {exc}"[:500]))
            raise
        withheld = None
        if not ctx.has_permission(perms.READ_RESULTS):
            withheld = (f"user {ctx.user_id!r} lacks the 'read_results' permission, so the "
                        "workflow ran (and was audited) but its results are not returned. Ask "
                        "an administrator to grant 'read_results', and include it in the "
                        "user_context's permissions if you list them.")
            audit_denial(manager, ctx.user_id, perms.READ_RESULTS, action + ":results", withheld)
        manager.audit.record(records.workflow_finished(
            ctx.user_id, self.name, "ok" if error is None else "error",
            results_returned=withheld is None, steps=[s.name for s in run.records]))
        return self.package(run, None if withheld else output, error, withheld)

    async def execute(self, run: WorkflowRun) -> tuple[Any, str | None]:
        """Run the steps; returns (output, error). Stops at the first failing step."""
        output: Any = None
        for step in self.steps:
            if step.tool is not None:
                arguments = step.arguments(run) if callable(step.arguments) else (
                    step.arguments or {})
                result = await run.tool(step.name, step.tool, **dict(arguments))
            else:
                assert step.code is not None
                result = await run.code(step.name, step.code, step.sandbox_type)
            if not result.success:
                return output, f"step {step.name!r} failed: {result.error}"
            output = result.values_dict
            if step.tool is not None and set(output) == {"result"}:
                output = output["result"]
            elif step.code is not None:
                output = {k: v for k, v in output.items() if k not in ("task", "previous")}
            run.outputs[step.name] = output
        return output, None

    def package(self, run: WorkflowRun, output: Any, error: str | None,
                withheld: str | None) -> Any:
        return WorkflowResult(
            workflow=self.name, task=run.task, user_id=run.context.user_id,
            output=output, outputs=None if withheld else dict(run.outputs),
            steps=list(run.records), success=error is None,
            error=None if withheld else error, withheld_reason=withheld)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, steps={[s.name for s in self.steps]})"

