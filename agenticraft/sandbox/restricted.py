"""RestrictedSandbox: the restricted Python subset, run in warm, lightly confined workers.

In-process code cannot be stopped while it sits inside one C call (``sum(iter(int, 1))``, a
catastrophic regex), so restricted code runs in a worker process from the same zygote as the
process sandbox. Workers are reused for the same user and profile while healthy (the restricted
executor builds fresh globals on every run, so nothing leaks between calls), replaced after any
kill or failure, and never shared between users.

Deep C recursion (hashing a tuple nested millions deep, which CPython does on the C stack
without any check) ends as the memory limit, not as a crash: the workers come from a zygote
exec'd with room for a main-thread stack larger than the memory limit can pay for
(``jail.confine.rlimits.stack_bound_mb``). Stack pages a run touched stay resident, so a worker
that ends a run holding much more memory than it started with is not reused: the next run gets
the whole memory limit.
"""

from __future__ import annotations

import functools
from typing import Any

from agenticraft.jail.confine import rlimits
from agenticraft.sandbox import host_report as host_probe
from agenticraft.sandbox.base import OutputCallback, Sandbox
from agenticraft.sandbox.process import to_result
from agenticraft.sandbox.profile import build_profile, check_host_code, manager_files
from agenticraft.sandbox.result import ExecutionResult
from agenticraft.sandbox.supervisor import Supervisor
from agenticraft.sandbox.types import SandboxType
from agenticraft.sandbox.workers import WorkerHandle
from agenticraft.security.context import SecurityContext

POOL_PER_USER = 4
#: A worker is reused while its resident memory after a run has grown by at most this share of
#: memory_mb (or RETAINED_MIN_MB) since it started.
RETAINED_SHARE = 0.25
RETAINED_MIN_MB = 32


class RestrictedSandbox(Sandbox):
    sandbox_type = SandboxType.RESTRICTED

    def __init__(self, manager: Any) -> None:
        super().__init__(manager)
        self.supervisor = Supervisor(host_probe.disabled_from_env(),
                                     ("agenticraft.jail.restricted",),
                                     stack_room_mb=rlimits.STACK_ROOM_MB,
                                     share_pages=host_probe.share_pages_from_env())
        self._idle: dict[tuple[str, str], list[WorkerHandle]] = {}
        self._started = False
        self._report: tuple[Any, dict[str, str]] = (None, {})

    @classmethod
    def probe(cls) -> list[str]:
        try:
            import RestrictedPython  # noqa: F401
        except ImportError:
            return ["the RestrictedPython package (pip install RestrictedPython)"]
        from agenticraft.sandbox.process import ProcessSandbox
        return ProcessSandbox.probe()

    async def start(self) -> None:
        if not self._started:
            await self.supervisor.astart(
                require=functools.partial(host_probe.check_required, self.manager.policy))
            self._started = True

    async def close(self) -> None:
        for handles in self._idle.values():
            for handle in handles:
                self.supervisor.discard(handle)
        self._idle.clear()
        if self._started:
            self.supervisor.close()
            self._started = False

    def host_report(self) -> dict[str, str]:
        # Every result carries it: made once per zygote start (its mechanisms), copied per run.
        mechanisms = self.supervisor.mechanisms
        if self._report[0] is not mechanisms:
            self._report = (mechanisms, self._make_report(mechanisms))
        return dict(self._report[1])

    @functools.lru_cache(maxsize=8)  # noqa: B019 - a few policies per sandbox, kept with it
    def _extra(self, allowed_imports: frozenset[str]) -> dict[str, Any]:
        """The run request's fixed part (one dict per policy, not one per run)."""
        return {"allowed_imports": sorted(allowed_imports)}

    @staticmethod
    def _make_report(mechanisms: dict[str, Any]) -> dict[str, str]:
        report = host_probe.limit_enforcement(mechanisms)
        report["code_policy"] = ("RestrictedPython compile-time policy + runtime guards "
                                 "(no imports, no private attributes, curated built-ins)")
        report["c_stack"] = host_probe.c_stack(mechanisms)
        return report

    async def run(self, code: str, ctx: SecurityContext,
                  on_output: OutputCallback | None = None) -> ExecutionResult:
        await self.start()
        # Workers are pooled per user and per confinement-relevant part of the context.
        key = (ctx.user_id, (ctx.resource_limits, str(ctx.working_dir or ""),
                             ctx.has_permission("write")))  # (limits: frozen, hashable)
        idle = self._idle.setdefault(key, [])
        extra = self._extra(self.manager.policy.allowed_imports)
        while True:
            pooled = bool(idle)
            if pooled:
                handle = idle.pop()
            else:
                profile = build_profile(ctx, scratch_root=self.supervisor.zygote.scratch_root,
                                        protect=manager_files(self.manager))
                check_host_code(profile, self.supervisor.mechanisms, self.sandbox_type.value)
                profile["executor"] = "restricted"
                profile["stack_mb"] = rlimits.stack_bound_mb(ctx.resource_limits.memory_mb)
                handle = await self.supervisor.spawn(profile, prefork=False)
                handle.start_rss_mb = handle.usage()[1]
            try:
                outcome = await self.supervisor.run_lean(handle, code, ctx.resource_limits,
                                                         on_output=on_output, extra=extra)
                break
            except (BrokenPipeError, ConnectionResetError):
                self.supervisor.discard(handle)
                if not pooled:
                    raise
                # a pooled worker died while idle (its zygote was restarted): use a fresh one
            except BaseException:
                self.supervisor.discard(handle)
                raise
        if (handle.alive and outcome.crashed is None and len(idle) < POOL_PER_USER
                and not _retains_memory(handle, outcome.usage, ctx.resource_limits.memory_mb)):
            idle.append(handle)  # healthy: keep it warm for this user
        elif handle.alive:
            self.supervisor.discard(handle)
        else:
            handle.close()
        return to_result(outcome, self.sandbox_type.value, self.host_report())


def _retains_memory(handle: WorkerHandle, usage: dict[str, Any], memory_mb: int) -> bool:
    """Whether the run left the worker holding memory the next run would miss (the stack a
    deep recursion touched, arenas of a large computation)."""
    grown = usage.get("memory_mb", 0.0) - handle.start_rss_mb
    return grown > max(memory_mb * RETAINED_SHARE, RETAINED_MIN_MB)
