"""How the agent API reaches the engine: the shared manager, identity, and the one door.

* **One manager.** Agents, tools and workflows share one process-wide ``SandboxManager``
  (:func:`default_manager`) unless one is passed in. It is created on first use and closed at
  interpreter exit, so its zygote processes do not outlive the program.
* **One engine loop.** Sandboxed runs are driven from a single long-lived event-loop thread.
  Callers may use any event loop (``asyncio.run`` per call, a notebook's loop, a synchronous
  helper): the engine's worker processes and locks always live on the same loop and threads,
  so a caller's short-lived loop ending never takes the sandbox down with it.
* **One door.** Every request is authenticated (when an authenticator is configured), resolved
  through ``SandboxManager.authorize`` (the administrator's policy; audited), and only then run
  through ``SandboxManager.audited``.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import os
import threading
from collections.abc import Awaitable, Coroutine, Mapping
from pathlib import Path
from typing import Any, TypeVar

from agenticraft.agents.auth import CREDENTIAL_KEYS, Authenticator
from agenticraft.agents.tools.base import Tool
from agenticraft.sandbox.manager import SandboxManager
from agenticraft.sandbox.result import ExecutionResult
from agenticraft.security import permissions as perms
from agenticraft.security import records
from agenticraft.security.context import SecurityContext, current_user
from agenticraft.wire.errors import (
    ConfigurationError,
    PermissionDenied,
    ResourceLimitExceeded,
    SecurityException,
)
from agenticraft.wire.limits import coerce_limit, strictest

__all__ = ["audit_denial", "authorize", "close_default_manager", "default_manager",
           "identify", "invoke_tool", "maybe_sync", "merge_limits",
           "on_engine", "run_code", "run_sync", "set_default_manager", "submit"]

T = TypeVar("T")


# -- the engine loop ----------------------------------------------------------------------------
class _EngineLoop:
    """A daemon thread running one event loop for every sandboxed run of this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None

    def get(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self.loop is None or self.loop.is_closed():
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def main() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self.thread = threading.Thread(target=main, name="agenticraft-engine",
                                               daemon=True)
                self.thread.start()
                ready.wait()
                self.loop = loop
            return self.loop

    def stop(self) -> None:
        with self._lock:
            loop, thread = self.loop, self.thread
            self.loop = self.thread = None
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=10)
                loop.close()


_ENGINE = _EngineLoop()


async def on_engine(coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` on the engine loop (directly when already there). Cancelling the caller
    cancels the run."""
    loop = _ENGINE.get()
    try:
        current = asyncio.get_running_loop()
    except RuntimeError:
        current = None
    if current is loop:
        return await coro
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))


def submit(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Start ``coro`` on the engine loop and return its future at once (synchronous callers
    that want to do something while it runs, e.g. print output as it arrives; cancelling the
    future cancels the run)."""
    return asyncio.run_coroutine_threadsafe(coro, _ENGINE.get())


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from synchronous code, even inside a running event loop
    (then on a helper thread, blocking the caller until it is done)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="agenticraft-sync") as pool:
        return pool.submit(asyncio.run, coro).result()


def maybe_sync(coro: Coroutine[Any, Any, T]) -> T | Awaitable[T]:
    """Dual-mode call: the result when no event loop is running in this thread (plain
    scripts); otherwise the awaitable itself, so ``await obj.run(...)`` works in async code and
    notebooks."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    return coro


# -- the shared manager -------------------------------------------------------------------------
_manager_lock = threading.Lock()
_default_manager: SandboxManager | None = None
_atexit_registered = False


def default_manager() -> SandboxManager:
    """The process-wide manager (system policy, user settings, audit log), created lazily."""
    global _default_manager, _atexit_registered
    with _manager_lock:
        if _default_manager is None:
            _default_manager = SandboxManager()
            if not _atexit_registered:
                atexit.register(_shutdown)
                _atexit_registered = True
        return _default_manager


def set_default_manager(manager: SandboxManager | None) -> SandboxManager | None:
    """Install ``manager`` as the shared one; returns the previous one (not closed)."""
    global _default_manager
    with _manager_lock:
        previous, _default_manager = _default_manager, manager
    return previous


def close_default_manager() -> None:
    """Close the shared manager's sandboxes (a new one is created on next use)."""
    manager = set_default_manager(None)
    if manager is not None:
        close_manager(manager)


def close_manager(manager: SandboxManager) -> None:
    """Close ``manager`` from synchronous code (its sandboxes were started on the engine)."""
    loop = _ENGINE.loop
    if loop is not None and not loop.is_closed() and loop.is_running():
        if threading.current_thread() is _ENGINE.thread:
            raise RuntimeError("close_manager cannot be called from the engine loop")
        asyncio.run_coroutine_threadsafe(manager.close(), loop).result(timeout=60)
    else:
        run_sync(manager.close())


def _shutdown() -> None:
    with contextlib.suppress(Exception):
        close_default_manager()
    with contextlib.suppress(Exception):
        _ENGINE.stop()


# -- identity and authorization -----------------------------------------------------------------
def identify(manager: SandboxManager, user_context: Any, *,
             authenticator: Authenticator | None = None,
             default_user_id: str | None = None) -> SecurityContext:
    """The caller's request as an unresolved context: verified when an authenticator is set,
    otherwise taken as given (its permissions and limits are still only a request)."""
    if authenticator is not None:
        return authenticator.authenticate(user_context, manager.audit)
    if isinstance(user_context, str):
        raise ConfigurationError("user_context is a string (a token?) but no authenticator is "
                                 "configured; pass authenticator=HMACAuthenticator(...)")
    if isinstance(user_context, Mapping):
        creds = sorted(set(user_context) & CREDENTIAL_KEYS)
        if creds:
            raise ConfigurationError(
                f"user_context carries {creds} but no authenticator is configured; pass "
                "authenticator=HMACAuthenticator(secret) or APIKeyAuthenticator(policy).")
    return SecurityContext.from_value(user_context,
                                      default_user=default_user_id or current_user())


def merge_limits(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Combine limit requests; where several name a limit, the strictest wins."""
    merged: dict[str, Any] = {}
    for layer in layers:
        for name, value in (layer or {}).items():
            value = coerce_limit(name, value)
            merged[name] = strictest(name, merged[name], value) if name in merged else value
    return merged


def audit_denial(manager: SandboxManager, user_id: str, permission: str, action: str,
                 reason: str, **fields: Any) -> None:
    manager.audit.record(records.denial(user_id, permission, action=action, reason=reason,
                                        **fields))


def authorize(manager: SandboxManager, request: SecurityContext, permission: str, *,
              sandbox_type: str | None, action: str,
              limits: Mapping[str, Any] | None = None,
              narrow: Mapping[str, Any] | None = None) -> SecurityContext:
    """Resolve ``request`` through the policy (via ``manager.authorize``) and require
    ``permission``. ``limits`` (an Agent's requests) and ``narrow`` (what a tool switches off)
    are combined with the caller's own limits, strictest first, so a ``user_context`` can
    tighten but never loosen what the agent asked for."""
    if request.working_dir is not None:
        root = Path(manager.working_dir).resolve()
        wanted = Path(os.path.realpath(request.working_dir))
        if not wanted.is_relative_to(root):
            reason = (f"Permission denied: working_dir {str(wanted)!r} is outside the working "
                      f"directory {str(root)!r} this manager serves; a user_context may only "
                      "narrow it.")
            audit_denial(manager, request.user_id, "working_dir", action, reason)
            raise PermissionDenied(reason, permission="working_dir", user_id=request.user_id,
                                   ceiling=str(root))
    asked = merge_limits(limits, request.limit_request, narrow)
    rebuilt = SecurityContext(request.user_id, request.requested_permissions, asked,
                              sandbox_type=request.sandbox_type,
                              working_dir=request.working_dir, image=request.image)
    return manager.authorize(rebuilt, permission, sandbox_type=sandbox_type, action=action,
                             limit_overrides=limits)


# -- running ------------------------------------------------------------------------------------
async def _execute(manager: SandboxManager, ctx: SecurityContext, code: str,
                   extra: Mapping[str, Any] | None) -> ExecutionResult:
    kind = ctx.sandbox_type or manager.default_sandbox_type
    sandbox = await manager.get_sandbox(kind)
    # The context was resolved by manager.authorize just before: run it through the audited
    # path without a second authorization record.
    return await sandbox.run_authorized(code, ctx, audit_extra=extra)


async def run_code(manager: SandboxManager, ctx: SecurityContext, code: str, *,
                   extra: Mapping[str, Any] | None = None) -> ExecutionResult:
    """Run ``code`` under the already-resolved ``ctx`` in its sandbox; audited."""
    return await on_engine(_execute(manager, ctx, code, extra))


async def invoke_tool(manager: SandboxManager, tool: Tool, arguments: Mapping[str, Any],
                      request: SecurityContext, *, permission: str = perms.EXECUTE,
                      limits: Mapping[str, Any] | None = None, action: str | None = None,
                      audit_fields: Mapping[str, Any] | None = None) -> ExecutionResult:
    """Authorize and run ``tool`` for ``request``; every outcome is a ``tool`` audit record.

    ``permission`` is the call site's base permission (``execute``, or ``execute_workflow``
    for a workflow's steps). The tool runs with network and filesystem access switched off
    unless it declares them, and refuses to run (``PermissionDenied``, before anything runs)
    when it declares one that the resolved context does not allow. The whole call runs on the
    engine loop.
    """
    return await on_engine(_invoke_tool(manager, tool, arguments, request,
                                        permission=permission, limits=limits, action=action,
                                        audit_fields=audit_fields))


async def _invoke_tool(manager: SandboxManager, tool: Tool, arguments: Mapping[str, Any],
                       request: SecurityContext, *, permission: str,
                       limits: Mapping[str, Any] | None, action: str | None,
                       audit_fields: Mapping[str, Any] | None) -> ExecutionResult:
    action = action or f"tool:{tool.name}"
    user_id = request.user_id
    fields = {"sandbox_type": tool.sandbox_type, **(audit_fields or {})}

    def record(outcome: str, **details: Any) -> None:
        manager.audit.record(records.tool_call(user_id, tool.name, outcome, **fields,
                                               **details))

    try:
        if request.sandbox_type not in (None, tool.sandbox_type):
            raise ConfigurationError(
                f"Tool {tool.name!r} runs in the {tool.sandbox_type!r} sandbox; the "
                f"user_context asks for {request.sandbox_type!r}.")
        arguments = tool.bind(arguments)
        narrow = {}
        if not tool.network:
            narrow["network_access"] = False
        if not tool.filesystem:
            narrow["filesystem_access"] = False
        ctx = authorize(manager, request, permission, sandbox_type=tool.sandbox_type,
                        action=action, limits=limits, narrow=narrow)
        user_id = ctx.user_id
        _check_needs(manager, tool, ctx, action)
        tool.check(arguments, ctx)
        code = tool.build_code(arguments, ctx)
    except PermissionDenied as exc:
        record("denied", reason=str(exc))
        raise
    except ConfigurationError as exc:
        record("invalid", reason=str(exc))
        raise
    try:
        result = await run_code(manager, ctx, code, extra={"action": action})
        result = tool.finish(result)
    except ResourceLimitExceeded as exc:
        record("limit_exceeded", limit=exc.limit)
        raise
    except SecurityException as exc:
        record("denied", reason=str(exc)[:500])
        raise
    except Exception as exc:
        record("sandbox_error", reason=f"{type(exc).__name__}: {exc}"[:500])
        raise
    record("ok" if result.success else "error",
           error=None if result.error is None else str(result.error)[:500],
           duration_ms=result.execution_time_ms)
    return result


def _check_needs(manager: SandboxManager, tool: Tool, ctx: SecurityContext, action: str) -> None:
    """The tool's declared needs against the resolved context (audited denials)."""
    limits = ctx.resource_limits
    for name in sorted(tool.extra_permissions()):
        if not ctx.has_permission(name):
            reason = (f"Permission denied: tool {tool.name!r} needs the {name!r} permission, "
                      f"which the policy does not give user {ctx.user_id!r} here.")
            audit_denial(manager, ctx.user_id, name, action, reason)
            raise PermissionDenied(reason, permission=name, user_id=ctx.user_id)
    for needed, limit in ((tool.network, "network_access"),
                          (tool.filesystem, "filesystem_access")):
        if needed and not getattr(limits, limit):
            reason = (f"Permission denied: tool {tool.name!r} needs {limit}, but the effective "
                      f"context of user {ctx.user_id!r} has {limit}=False. Request it with "
                      f"user_context={{'resource_limits': {{'{limit}': True}}}} (the "
                      "administrator's policy must allow it); nothing was run.")
            audit_denial(manager, ctx.user_id, limit, action, reason)
            raise PermissionDenied(reason, permission=limit, user_id=ctx.user_id,
                                   ceiling=False)
