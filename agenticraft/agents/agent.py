"""The Agent API of the specification, on the same policy, sandboxes and audit log as the kernel.

::

    agent = Agent(name="SecureBot", sandbox_enabled=True, sandbox_type="restricted",
                  memory_limit=256, cpu_limit=50.0)
    result = await agent.execute_secure("result = sum([1, 2, 3, 4, 5])")
    print(result)  # {"result": 15}

* ``memory_limit`` (MB), ``cpu_limit`` (percent), ``timeout`` (seconds), ``network_access`` and
  ``filesystem_access`` are *requests*: each call resolves them through the administrator's
  policy (``SandboxManager.authorize``), and the caller's ``user_context`` can only tighten them.
* ``user_context`` (a dict or ``SecurityContext``) names the caller. Its permissions and limits
  are requests too: the policy grants what that user gets. With an ``authenticator``
  (``agenticraft.agents.auth``) the ``user_id`` itself must be proven.
* ``sandbox_enabled=False`` runs code in this very process with plain ``exec`` - no isolation
  and no limits. It is refused (``PermissionDenied``, audited) unless the policy sets
  ``[sandbox] allow_unsandboxed = true``.
* ``run(prompt)`` talks to a model provider (a callable, or an OpenAI-compatible endpoint) and
  runs every code block or tool call the model asks for through ``execute_secure`` /
  ``execute_tool_secure``. Without a provider it raises :class:`ProviderNotConfigured`.

Synchronous use: ``agent.run(...)`` returns the response directly when no event loop is running
(plain scripts); inside a running loop (async code, notebooks) it returns an awaitable, so write
``await agent.run(...)`` there, or use ``await agent.arun(...)`` everywhere.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
import inspect
import io
import json
import os
import re
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from agenticraft.agents.auth import Authenticator
from agenticraft.agents.tools.base import Tool
from agenticraft.agents.tools.builtin import SearchBackend, default_registry
from agenticraft.agents.tools.runtime import (
    audit_denial,
    authorize,
    default_manager,
    identify,
    invoke_tool,
    maybe_sync,
    on_engine,
    run_code,
)
from agenticraft.sandbox.manager import SandboxManager
from agenticraft.sandbox.result import ExecutionError, ExecutionResult
from agenticraft.sandbox.types import SandboxType
from agenticraft.security import permissions as perms
from agenticraft.security import records
from agenticraft.security.context import SecurityContext
from agenticraft.wire.codec import is_plain_name, to_safe
from agenticraft.wire.errors import (
    ConfigurationError,
    PermissionDenied,
    ResourceLimitExceeded,
)
from agenticraft.wire.limits import LIMIT_NAMES, coerce_limit

__all__ = ["Agent", "AgentResponse", "AgentStep", "CallableProvider", "ModelProvider",
           "ModelReply", "OpenAICompatibleProvider", "ProviderError", "ProviderNotConfigured",
           "ToolCall", "as_provider", "provider_from_env"]

PROVIDER_URL_ENV = "AGENTICRAFT_PROVIDER_URL"
PROVIDER_MODEL_ENV = "AGENTICRAFT_PROVIDER_MODEL"
PROVIDER_KEY_ENV = "AGENTICRAFT_PROVIDER_API_KEY"

#: Agent keyword -> resource limit it requests.
AGENT_LIMITS = {"memory_limit": "memory_mb", "cpu_limit": "cpu_percent",
                "timeout": "timeout_seconds", "network_access": "network_access",
                "filesystem_access": "filesystem_access"}


# -- model providers ----------------------------------------------------------------------------
class ProviderNotConfigured(ConfigurationError):
    """``Agent.run`` needs a model provider and none is configured."""


class ProviderError(RuntimeError):
    """The model provider failed (HTTP error, malformed answer)."""


@dataclasses.dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: Mapping[str, Any]
    id: str = ""


@dataclasses.dataclass(frozen=True)
class ModelReply:
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()

    @classmethod
    def from_value(cls, value: Any) -> ModelReply:
        """Accept a string, an OpenAI-style message dict, or a ModelReply."""
        if isinstance(value, ModelReply):
            return value
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, Mapping):
            calls = []
            for i, raw in enumerate(value.get("tool_calls") or ()):
                if not isinstance(raw, Mapping):
                    raise ProviderError(f"malformed tool call from the model: {raw!r}")
                fn = raw.get("function") if isinstance(raw.get("function"), Mapping) else raw
                args = fn.get("arguments") or {}
                if isinstance(args, str):
                    try:
                        args = json.loads(args) if args.strip() else {}
                    except ValueError:
                        raise ProviderError(f"tool call arguments are not JSON: {args!r}") \
                            from None
                calls.append(ToolCall(str(fn.get("name", "")), args,
                                      str(raw.get("id") or f"call_{i}")))
            return cls(str(value.get("content") or ""), tuple(calls))
        raise ProviderError(f"the model provider returned {type(value).__name__}; expected a "
                            "string or a message dict")


class ModelProvider(abc.ABC):
    """Something that answers a chat: ``await provider.complete(messages, tools)``."""

    @abc.abstractmethod
    async def complete(self, messages: list[dict[str, Any]],
                       tools: list[dict[str, Any]] | None = None) -> ModelReply: ...


class CallableProvider(ModelProvider):
    """Wrap ``fn(messages)`` (or ``fn(messages, tools)``), sync or async, returning a string or
    a message dict ``{"content": ..., "tool_calls": [{"name": ..., "arguments": {...}}]}``."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        try:
            params = inspect.signature(fn).parameters
            self._wants_tools = "tools" in params
        except (TypeError, ValueError):
            self._wants_tools = False

    async def complete(self, messages: list[dict[str, Any]],
                       tools: list[dict[str, Any]] | None = None) -> ModelReply:
        value = self.fn(messages, tools=tools) if self._wants_tools else self.fn(messages)
        if inspect.isawaitable(value):
            value = await value
        return ModelReply.from_value(value)


class OpenAICompatibleProvider(ModelProvider):
    """``POST {base_url}/chat/completions`` (OpenAI, vLLM, llama.cpp server, Ollama, ...).

    The provider is trusted host-side infrastructure: it runs in this process, while everything
    the model asks to run goes through the sandbox.
    """

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None,
                 timeout: float = 120.0, extra: Mapping[str, Any] | None = None) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigurationError(f"base_url must be an http(s) URL, not {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.extra = dict(extra or {})

    def __repr__(self) -> str:
        return f"OpenAICompatibleProvider(base_url={self.base_url!r}, model={self.model!r})"

    async def complete(self, messages: list[dict[str, Any]],
                       tools: list[dict[str, Any]] | None = None) -> ModelReply:
        body: dict[str, Any] = {"model": self.model, "messages": messages, **self.extra}
        if tools:
            body["tools"] = tools
        data = await asyncio.to_thread(self._post, body)
        try:
            message = data["choices"][0]["message"]
        except (KeyError, IndexError, TypeError):
            raise ProviderError(f"unexpected answer from {self.base_url}: "
                                f"{json.dumps(data)[:300]}") from None
        return ModelReply.from_value(message)

    def _post(self, body: dict[str, Any]) -> Any:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(f"{self.base_url}/chat/completions",
                                         data=json.dumps(body).encode(), headers=headers,
                                         method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode("utf-8", "replace")
            raise ProviderError(f"{self.base_url} answered HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ProviderError(f"cannot reach the model provider {self.base_url}: {exc}") \
                from None


def provider_from_env(env: Mapping[str, str] | None = None,
                      model: str | None = None) -> ModelProvider | None:
    """An OpenAI-compatible provider from ``AGENTICRAFT_PROVIDER_URL`` (+ ``_MODEL``,
    ``_API_KEY``), or None when the URL is not set."""
    env = os.environ if env is None else env
    url = (env.get(PROVIDER_URL_ENV) or "").strip()
    if not url:
        return None
    name = model or (env.get(PROVIDER_MODEL_ENV) or "").strip()
    if not name:
        raise ProviderNotConfigured(f"{PROVIDER_URL_ENV} is set but no model is named: set "
                                    f"{PROVIDER_MODEL_ENV} or pass Agent(model=...).")
    return OpenAICompatibleProvider(url, name, api_key=env.get(PROVIDER_KEY_ENV) or None)


def as_provider(value: ModelProvider | Callable[..., Any]) -> ModelProvider:
    if isinstance(value, ModelProvider):
        return value
    if callable(value):
        return CallableProvider(value)
    raise ConfigurationError(f"provider must be a ModelProvider or a callable, not "
                             f"{type(value).__name__}")


# -- responses ----------------------------------------------------------------------------------
@dataclasses.dataclass
class AgentStep:
    """One thing the model asked for during ``run``: a code block or a tool call."""

    kind: str  # "code" | "tool"
    name: str
    input: Any
    result: ExecutionResult | None = None
    error: str | None = None


@dataclasses.dataclass
class AgentResponse:
    """What ``Agent.run`` returns: the final answer and the steps taken to reach it."""

    content: str
    steps: list[AgentStep] = dataclasses.field(default_factory=list)
    finished: bool = True

    def __str__(self) -> str:
        return self.content


_CODE_BLOCK = re.compile(r"```(?:python|py|python3)?[ \t]*\n(.*?)```", re.DOTALL)


def extract_code(text: str) -> str | None:
    match = _CODE_BLOCK.search(text or "")
    return match.group(1) if match else None


# -- the agent ----------------------------------------------------------------------------------
class Agent:
    """An agent whose code and tools run in a sandbox under the caller's resolved context."""

    def __init__(self, name: str = "Agent", *, instructions: str | None = None,
                 sandbox_enabled: bool = True, sandbox_type: str | SandboxType | None = None,
                 memory_limit: int | None = None, cpu_limit: float | None = None,
                 timeout: float | None = None, network_access: bool | list[str] | None = None,
                 filesystem_access: bool | None = None,
                 tools: Iterable[Tool | Callable[..., Any]] = (),
                 search_backend: SearchBackend | None = None,
                 provider: ModelProvider | Callable[..., Any] | None = None,
                 model: str | None = None, manager: SandboxManager | None = None,
                 authenticator: Authenticator | None = None,
                 user_context: SecurityContext | Mapping[str, Any] | None = None,
                 max_steps: int = 6) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ConfigurationError(f"Agent name must be a non-empty string, not {name!r}")
        self.name = name
        self.instructions = instructions
        self.sandbox_enabled = bool(sandbox_enabled)
        self._sandbox_type = None if sandbox_type is None else SandboxType.parse(sandbox_type)
        given = {"memory_limit": memory_limit, "cpu_limit": cpu_limit, "timeout": timeout,
                 "network_access": network_access, "filesystem_access": filesystem_access}
        self.limits: dict[str, Any] = {AGENT_LIMITS[k]: coerce_limit(AGENT_LIMITS[k], v)
                                       for k, v in given.items() if v is not None}
        self.tools = default_registry(search_backend)
        for item in tools:
            self.tools.register(item, replace=True)
        self.provider = None if provider is None else as_provider(provider)
        self.model = model
        self._manager = manager
        self.authenticator = authenticator
        self.user_context = user_context
        if not isinstance(max_steps, int) or max_steps < 1:
            raise ConfigurationError("max_steps must be a positive integer")
        self.max_steps = max_steps

    # -- configuration ----------------------------------------------------------------------
    @property
    def manager(self) -> SandboxManager:
        """The manager given at construction, else the shared process-wide one."""
        return self._manager if self._manager is not None else default_manager()

    @property
    def sandbox_type(self) -> str:
        """The sandbox used by ``execute_secure`` (the manager's default when not given)."""
        if self._sandbox_type is not None:
            return self._sandbox_type.value
        return self.manager.default_sandbox_type

    def register_tool(self, item: Tool | Callable[..., Any], name: str | None = None, *,
                      replace: bool = False, **needs: Any) -> Tool:
        """Register a Tool or a plain function (run in the sandbox, never in the host)."""
        return self.tools.register(item, name, replace=replace, **needs)

    def __repr__(self) -> str:
        return (f"Agent(name={self.name!r}, sandbox_enabled={self.sandbox_enabled}, "
                f"sandbox_type={self._sandbox_type and self._sandbox_type.value!r}, "
                f"limits={self.limits}, tools={self.tools.names()})")

    def _request(self, user_context: Any) -> SecurityContext:
        context = user_context if user_context is not None else self.user_context
        return identify(self.manager, context, authenticator=self.authenticator)

    # -- code -------------------------------------------------------------------------------
    async def execute_secure(self, code: str, user_context: Any = None) -> ExecutionResult:
        """Run ``code`` in the sandbox under the caller's resolved context.

        Returns an ``ExecutionResult`` (a mapping of the names the code bound; ``print`` shows
        it as JSON). Errors in the code are in ``result.error``; a limit raises
        ``ResourceLimitExceeded``, a missing permission ``PermissionDenied``; all audited.
        """
        if not isinstance(code, str):
            raise ConfigurationError(f"code must be a string, not {type(code).__name__}")
        if not self.sandbox_enabled:
            return await self._execute_unsandboxed(code, self._request(user_context))
        # Identity, authorization and the run all happen on the engine loop: one thread does
        # the work while the caller waits, which keeps concurrent callers off each other's GIL.
        return await on_engine(self._sandboxed(code, user_context, None))

    async def _execute(self, code: str, request: SecurityContext) -> ExecutionResult:
        if not self.sandbox_enabled:
            return await self._execute_unsandboxed(code, request)
        return await on_engine(self._sandboxed(code, None, request))

    async def _sandboxed(self, code: str, user_context: Any,
                         request: SecurityContext | None) -> ExecutionResult:
        manager = self.manager
        if request is None:
            request = self._request(user_context)
        ctx = authorize(manager, request, perms.EXECUTE, sandbox_type=self.sandbox_type,
                        action="execute_secure", limits=self.limits)
        return await run_code(manager, ctx, code,
                              extra={"action": "execute_secure", "agent": self.name})

    async def _execute_unsandboxed(self, code: str, request: SecurityContext) -> ExecutionResult:
        manager = self.manager
        ctx = authorize(manager, request, perms.EXECUTE, sandbox_type=self.sandbox_type,
                        action="execute_unsandboxed", limits=self.limits)
        if not manager.policy.allow_unsandboxed:
            reason = (f"Permission denied: Agent {self.name!r} has sandbox_enabled=False, which "
                      "runs code inside this process with no isolation and no limits, and the "
                      f"administrator's policy ({manager.policy.source_text()}) does not allow "
                      "that ([sandbox] allow_unsandboxed = false). Use sandbox_enabled=True.")
            audit_denial(manager, ctx.user_id, "unsandboxed_execution", "execute_unsandboxed",
                         reason, agent=self.name)
            raise PermissionDenied(reason, permission="unsandboxed_execution",
                                   user_id=ctx.user_id, ceiling=False)
        manager.audit.record(records.authorization(
            ctx.user_id, "unsandboxed_execution", True, action="execute_unsandboxed",
            agent=self.name, warning="code runs in the host process without a sandbox"))

        async def run() -> ExecutionResult:
            return _run_in_process(code)

        return await manager.audited("none", code, ctx, run,
                                     extra={"action": "execute_unsandboxed", "agent": self.name})

    # -- tools ------------------------------------------------------------------------------
    async def execute_tool_secure(self, tool_name: str, /, user_context: Any = None,
                                  **arguments: Any) -> ExecutionResult:
        """Run the registered tool ``tool_name`` in its sandbox under the caller's context.

        The tool's value is ``result["result"]``. A tool needing network or filesystem access
        the resolved context does not allow raises ``PermissionDenied`` before anything runs.
        Tools always run sandboxed, whatever ``sandbox_enabled`` says.
        """
        return await on_engine(self._tool(tool_name, None, arguments, user_context))

    async def _tool(self, tool_name: str, request: SecurityContext | None,
                    arguments: Mapping[str, Any], user_context: Any = None) -> ExecutionResult:
        manager = self.manager
        if request is None:
            request = self._request(user_context)
        try:
            tool = self.tools.get(tool_name)
        except ConfigurationError as exc:
            manager.audit.record(records.tool_call(request.user_id, str(tool_name), "unknown",
                                                   agent=self.name, reason=str(exc)))
            raise
        return await invoke_tool(manager, tool, arguments, request, limits=self.limits,
                                 audit_fields={"agent": self.name})

    # -- model loop -------------------------------------------------------------------------
    def resolve_provider(self) -> ModelProvider:
        provider = self.provider or provider_from_env(model=self.model)
        if provider is None:
            raise ProviderNotConfigured(
                f"Agent {self.name!r} has no model provider, so run() cannot answer a prompt. "
                "Configure one: Agent(..., provider=fn) where fn(messages) returns the reply "
                "text; or Agent(..., provider=OpenAICompatibleProvider(base_url=..., "
                f"model=...)); or set {PROVIDER_URL_ENV} and {PROVIDER_MODEL_ENV} (and "
                f"{PROVIDER_KEY_ENV} if the endpoint needs a key). To run code without a model, "
                "use await agent.execute_secure(code).")
        return provider

    def run(self, prompt: str, user_context: Any = None) -> AgentResponse | Awaitable[
            AgentResponse]:
        """Answer ``prompt`` with the model, running what it asks for in the sandbox.

        Returns the :class:`AgentResponse` when called from synchronous code; inside a running
        event loop it returns an awaitable (``await agent.run(...)``).
        """
        self.resolve_provider()  # a clear error now, even before anything is awaited
        return maybe_sync(self.arun(prompt, user_context))

    async def arun(self, prompt: str, user_context: Any = None) -> AgentResponse:
        provider = self.resolve_provider()
        if not isinstance(prompt, str) or not prompt.strip():
            raise ConfigurationError("prompt must be a non-empty string")
        request = self._request(user_context)
        authorize(self.manager, request, perms.EXECUTE, sandbox_type=self.sandbox_type,
                  action="agent.run", limits=self.limits)
        messages: list[dict[str, Any]] = [{"role": "system", "content": self._system_prompt()},
                                          {"role": "user", "content": prompt}]
        steps: list[AgentStep] = []
        schemas = self.tools.schemas()
        reply = ModelReply()
        for _ in range(self.max_steps):
            reply = await provider.complete(messages, schemas)
            if reply.tool_calls:
                messages.append(_assistant_message(reply))
                for call in reply.tool_calls:
                    step = AgentStep("tool", call.name, dict(call.arguments))
                    steps.append(step)
                    text = await self._model_tool_call(call, request, step)
                    messages.append({"role": "tool", "tool_call_id": call.id, "name": call.name,
                                     "content": text})
                continue
            code = extract_code(reply.content)
            if code is None:
                return AgentResponse(reply.content, steps)
            step = AgentStep("code", "execute_secure", code)
            steps.append(step)
            messages.append({"role": "assistant", "content": reply.content})
            try:
                step.result = await self._execute(code, request)
                text = describe_result(step.result)
            except ResourceLimitExceeded as exc:
                step.error = str(exc)
                text = f"The code was stopped: {exc}"
            messages.append({"role": "user", "content": f"Sandbox result:\n{text}"})
        return AgentResponse(reply.content, steps, finished=False)

    async def _model_tool_call(self, call: ToolCall, request: SecurityContext,
                               step: AgentStep) -> str:
        """Run a tool call the model asked for; report failures back to the model.

        A refused permission is not negotiable with the model: it propagates to the caller."""
        if not isinstance(call.arguments, Mapping):
            step.error = "arguments must be an object"
            return f"Error: the arguments of {call.name} must be a JSON object"
        try:
            step.result = await self._tool(call.name, request, call.arguments)
        except PermissionDenied:
            raise
        except (ConfigurationError, ResourceLimitExceeded) as exc:
            step.error = str(exc)
            return f"Error: {exc}"
        return describe_result(step.result)

    def _system_prompt(self) -> str:
        lines = [f"You are {self.name}, an assistant whose code runs in a secure sandbox."]
        if self.instructions:
            lines.append(self.instructions)
        lines.append("To compute something, reply with a single ```python code block that binds "
                     "the answer to `result`; you will receive the variables it bound and what "
                     "it printed. Tools you can call:")
        for tool in self.tools:
            args = ", ".join(tool.parameters)
            lines.append(f"- {tool.name}({args}): {tool.description}")
        lines.append("When you have the answer, reply in plain text without a code block.")
        return "\n".join(lines)


def describe_result(result: ExecutionResult, limit: int = 4000) -> str:
    """A compact text of a sandbox result for a model."""
    parts = [f"variables: {result}"]
    if result.stdout:
        parts.append(f"stdout:\n{result.stdout}")
    if result.error is not None:
        parts.append(f"error: {result.error}")
    text = "\n".join(parts)
    return text if len(text) <= limit else text[:limit] + "\n[truncated]"


def _assistant_message(reply: ModelReply) -> dict[str, Any]:
    return {"role": "assistant", "content": reply.content or None,
            "tool_calls": [{"id": c.id, "type": "function",
                            "function": {"name": c.name, "arguments": json.dumps(
                                dict(c.arguments) if isinstance(c.arguments, Mapping)
                                else c.arguments)}}
                           for c in reply.tool_calls]}


def _run_in_process(code: str) -> ExecutionResult:
    """``exec`` in this process: NO isolation and NO limits (``sandbox_enabled=False``)."""
    import psutil

    namespace: dict[str, Any] = {"__name__": "__agenticraft_unsandboxed__"}
    out, err = io.StringIO(), io.StringIO()
    started, cpu_started = time.perf_counter(), time.process_time()
    error = None
    try:
        compiled = compile(code, "<unsandboxed>", "exec")
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            exec(compiled, namespace)
    except (Exception, SystemExit) as exc:
        error = ExecutionError(type(exc).__name__, str(exc), traceback.format_exc())
    values = {k: to_safe(v) for k, v in namespace.items()
              if k != "__builtins__" and is_plain_name(k, v)}
    usage = {"memory_mb": round(psutil.Process().memory_info().rss / 2**20, 2),
             "cpu_seconds": round(time.process_time() - cpu_started, 4),
             "output_bytes": len(out.getvalue()) + len(err.getvalue()),
             "note": "host process (no sandbox)"}
    return ExecutionResult(values, success=error is None, error=error, stdout=out.getvalue(),
                           stderr=err.getvalue(), resource_usage=usage,
                           execution_time_ms=round((time.perf_counter() - started) * 1000, 3),
                           sandbox_type="none",
                           enforced={name: "not enforced (sandbox_enabled=False)"
                                     for name in LIMIT_NAMES})

