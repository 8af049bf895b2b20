"""Benchmark-only timers: wrap named functions to learn what each step of a path costs.

Nothing here is imported by the package: the benchmarks patch the functions they time, in the
host process (``Timers``) or inside a zygote they start themselves (``install_confine_timers``,
run by the zygote's ``-c`` code), so production code pays nothing for it.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import time
from collections import defaultdict
from typing import Any

#: The confinement steps, in the order ``jail.confine.apply.confine`` takes them.
CONFINE_STEPS = (
    ("cgroups", "place", "cgroup unit: create/join + limit writes"),
    ("namespaces", "enter", "unshare user+ipc+uts+net+mnt(+pid) namespaces, id maps"),
    ("pidns", "start_init", "PID namespace init (a fork)"),
    ("mounts", "build", "private root (mount tree, /proc, /dev, tmpfs)"),
    ("pidns", "start_worker", "PID namespace worker (a fork)"),
    ("pidns", "hand_root", "prepared blank: the new root handed to the init"),
    ("namespaces", "drop_capabilities", "drop capabilities"),
    ("rlimits", "apply", "rlimits"),
    ("landlock", "apply", "Landlock ruleset"),
    ("seccomp", "apply", "seccomp filter"),
    ("pidns", "init_settled", "prepared blank: wait until the init moved and dropped caps"),
)
MARK = b"AGENTICRAFT-BENCH-TIMINGS "


class Timers:
    """Wrap attributes (sync or async callables) and collect each call's duration by label."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = defaultdict(list)
        self._undo: list[tuple[Any, str, Any]] = []

    def patch(self, owner: Any, name: str, label: str) -> None:
        original = owner.__dict__[name] if name in getattr(owner, "__dict__", {}) else getattr(
            owner, name)
        func = original.__func__ if isinstance(original, staticmethod | classmethod) else original
        samples = self.samples[label]
        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def timed(*args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    return await func(*args, **kwargs)
                finally:
                    samples.append(time.perf_counter() - start)
        else:
            @functools.wraps(func)
            def timed(*args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
                start = time.perf_counter()
                try:
                    return func(*args, **kwargs)
                finally:
                    samples.append(time.perf_counter() - start)
        wrapped: Any = timed
        if isinstance(original, staticmethod):
            wrapped = staticmethod(timed)
        elif isinstance(original, classmethod):
            wrapped = classmethod(timed)
        setattr(owner, name, wrapped)
        self._undo.append((owner, name, original))

    def clear(self) -> None:
        for samples in self.samples.values():
            samples.clear()

    def restore(self) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)
        self._undo.clear()


def install_confine_timers() -> None:
    """In a zygote started by a benchmark: time every confinement step in each worker; the
    worker writes them as one line to its stderr right after ``confine`` returns (the host
    reads it as the first run's stderr)."""
    import importlib

    from agenticraft.jail.confine import apply

    def wrap(module: Any, name: str, label: str) -> None:
        func = getattr(module, name)

        @functools.wraps(func)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            result = func(*args, **kwargs)  # the forks return here in the child
            steps.append((label, time.perf_counter() - start))
            return result
        setattr(module, name, timed)

    steps: list[tuple[str, float]] = []
    for module_name, name, label in CONFINE_STEPS:
        wrap(importlib.import_module(f"agenticraft.jail.confine.{module_name}"), name, label)
    confine = apply.confine

    @functools.wraps(confine)
    def timed_confine(*args: Any, **kwargs: Any) -> Any:
        steps.clear()
        start = time.perf_counter()
        applied = confine(*args, **kwargs)
        total = time.perf_counter() - start
        os.write(2, MARK + json.dumps({"steps": steps, "total": total}).encode() + b"\n")
        return applied
    apply.confine = timed_confine


def parse_confine_timers(stderr: str) -> dict[str, Any] | None:
    for line in stderr.splitlines():
        if line.startswith(MARK.decode()):
            return json.loads(line[len(MARK):])
    return None
