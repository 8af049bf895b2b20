"""What runs inside a worker: an *executor* turns code into bound names and output.

``exec`` keeps a namespace across runs (sessions); ``restricted`` runs the restricted policy.
The kernel adds an IPython executor. Executors run on the untrusted side, after confinement.
"""

from __future__ import annotations

import builtins
import functools
import traceback
from typing import Any

from agenticraft.wire.codec import is_plain_name, to_safe

CELL_FILENAME = "<sandbox>"


class ExecExecutor:
    """Plain ``exec`` in a namespace that persists for the life of the worker."""

    def __init__(self) -> None:
        self.namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}

    def run(self, code: str, request: dict[str, Any]) -> dict[str, Any]:
        before = {name: id(value) for name, value in self.namespace.items()}
        compiled = compile(code, CELL_FILENAME, "exec")
        exec(compiled, self.namespace)
        return {name: to_safe(value) for name, value in self.namespace.items()
                if is_plain_name(name, value) and before.get(name) != id(value)}

    def format_exception(self, exc: BaseException) -> dict[str, str]:
        return format_exception(exc)


class RestrictedExecutor:
    """The restricted language policy, inside a (lightly confined) worker process."""

    def __init__(self) -> None:
        from agenticraft.jail.restricted import run_restricted  # warm import happens in the zygote
        from agenticraft.jail.restricted.execute import install_process_hooks

        self._run = run_restricted
        # This process runs nothing but sandboxed code: warnings and unraisable reports go to
        # the active run (dropped between runs), and the heap is frozen so that the
        # gc.collect() ending every run only walks what runs created.
        install_process_hooks()

    def run(self, code: str, request: dict[str, Any]) -> dict[str, Any]:
        import sys

        limits = _limits(tuple(sorted((request.get("limits") or {}).items())))
        # Values are serialised inside the run (their __repr__ is user code), and a user
        # exception comes back as text formatted inside the run.
        return self._run(code, limits, write=sys.stdout.write,
                         allowed_imports=frozenset(request.get("allowed_imports") or ()),
                         serialize=to_safe)

    def format_exception(self, exc: BaseException) -> dict[str, str]:
        from agenticraft.jail.restricted import format_user_exception
        ename, evalue, text = format_user_exception(exc)
        return {"ename": ename, "evalue": evalue, "traceback": text}


@functools.lru_cache(maxsize=16)
def _limits(items: tuple[tuple[str, Any], ...]) -> Any:
    from agenticraft.wire.limits import ResourceLimits
    return ResourceLimits.from_value(dict(items))


EXECUTORS = {"exec": ExecExecutor, "restricted": RestrictedExecutor}


def format_exception(exc: BaseException) -> dict[str, str]:
    """Type, message and a traceback that shows only the user's frames."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == CELL_FILENAME]
    lines = ["Traceback (most recent call last):\n"] if frames else []
    lines += traceback.format_list(frames)
    lines += traceback.format_exception_only(type(exc), exc)
    return {"ename": type(exc).__name__, "evalue": str(exc), "traceback": "".join(lines)}
