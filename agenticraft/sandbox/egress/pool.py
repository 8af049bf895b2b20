"""The egress proxies of one sandbox backend: one per (allow-list, user), started on demand.

A worker's profile names its proxy's socket; workers of the same user with the same list share
the proxy (and the zygote's pre-forked workers stay reusable). Records name the user and the
run or cell that the owner announced last with ``begin_run``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from agenticraft.sandbox.egress.allowlist import AllowList
from agenticraft.sandbox.egress.proxy import EgressProxy
from agenticraft.sandbox.egress.resolver import Resolver
from agenticraft.security.context import SecurityContext
from agenticraft.wire import network


class EgressPool:
    def __init__(self, on_record: Callable[[dict[str, Any]], Any],
                 resolver: Resolver | None = None) -> None:
        self.on_record = on_record
        self.resolver = resolver
        self._proxies: dict[tuple[tuple[str, ...], str], EgressProxy] = {}
        self._lock = threading.Lock()

    def proxy_for(self, ctx: SecurityContext) -> EgressProxy | None:
        """The running proxy for ``ctx``'s allow-list (None unless it has one)."""
        value = ctx.resource_limits.network_access
        if not network.is_allow_list(value):
            return None
        key = (tuple(value), ctx.user_id)  # type: ignore[arg-type]
        with self._lock:
            proxy = self._proxies.get(key)
            if proxy is None:
                proxy = EgressProxy(AllowList(value), on_record=self.on_record,
                                    user_id=ctx.user_id, resolver=self.resolver,
                                    max_bytes=ctx.resource_limits.max_network_bytes)
                proxy.start()
                self._proxies[key] = proxy
            return proxy

    def endpoint_for(self, ctx: SecurityContext) -> tuple[str, str] | None:
        """(socket path, key) of ``ctx``'s proxy, None without an allow-list."""
        proxy = self.proxy_for(ctx)
        return (proxy.socket_path, proxy.key) if proxy is not None else None

    def begin_run(self, ctx: SecurityContext, **label: Any) -> None:
        proxy = self.proxy_for(ctx)
        if proxy is not None:
            proxy.max_bytes = ctx.resource_limits.max_network_bytes
            proxy.begin_run(user_id=ctx.user_id, **label)

    def refused(self, ctx: SecurityContext) -> list[str]:
        """Why each destination refused since the last ``begin_run`` was refused (one line
        each): what a notebook shows under a cell whose library kept the reason to itself."""
        value = ctx.resource_limits.network_access
        with self._lock:
            proxy = self._proxies.get((tuple(value), ctx.user_id)) if network.is_allow_list(
                value) else None  # type: ignore[arg-type]
        return list(proxy.refused.values()) if proxy is not None else []

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Until every proxy's connections are closed and recorded (tests, shutdown)."""
        with self._lock:
            proxies = list(self._proxies.values())
        return all(proxy.wait_idle(timeout) for proxy in proxies)

    def close(self) -> None:
        with self._lock:
            proxies, self._proxies = list(self._proxies.values()), {}
        for proxy in proxies:
            proxy.stop()
