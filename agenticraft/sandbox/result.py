"""ExecutionResult: what a sandboxed run returns to the host."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ExecutionError:
    """An exception raised by the user's code, as text (never the live object)."""

    ename: str
    evalue: str
    traceback: str = ""

    def __str__(self) -> str:
        return f"{self.ename}: {self.evalue}" if self.evalue else self.ename


@dataclass(frozen=True)
class Output:
    """One ordered output item: a stream chunk or a displayed value."""

    kind: str  # "stdout" | "stderr" | "display" | "result"
    data: Any


class ExecutionResult(Mapping[str, Any]):
    """A read-only mapping of the names the code bound, plus how the run went.

    ``print(result)`` shows the mapping as JSON (``{"result": 15}``). Attributes: ``success``,
    ``error`` (an ``ExecutionError`` or None), ``stdout``, ``stderr``, ``resource_usage``
    (``memory_mb``, ``cpu_seconds``, ...), ``execution_time_ms``, ``sandbox_type``, ``enforced``
    (which mechanism enforced which limit on this host), ``truncated`` (output was cut).
    """

    def __init__(self, values: Mapping[str, Any] | None = None, *, success: bool = True,
                 error: ExecutionError | None = None, stdout: str = "", stderr: str = "",
                 resource_usage: Mapping[str, Any] | None = None,
                 execution_time_ms: float = 0.0, sandbox_type: str = "",
                 enforced: Mapping[str, str] | None = None, truncated: bool = False,
                 outputs: tuple[Output, ...] = ()) -> None:
        self._values = dict(values or {})
        self.success = success
        self.error = error
        self.stdout = stdout
        self.stderr = stderr
        self.resource_usage = {"memory_mb": 0.0, "cpu_seconds": 0.0, **(resource_usage or {})}
        self.execution_time_ms = execution_time_ms
        self.sandbox_type = sandbox_type
        self.enforced = dict(enforced or {})
        self.truncated = truncated
        self.outputs = outputs

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    @property
    def values_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def __str__(self) -> str:
        return json.dumps(self._values, default=repr)

    def __repr__(self) -> str:
        state = "ok" if self.success else f"failed: {self.error}"
        return f"ExecutionResult({self}, {state}, {self.execution_time_ms:.1f} ms)"

    def to_dict(self) -> dict[str, Any]:
        return {"values": self._values, "success": self.success,
                "error": None if self.error is None else vars(self.error),
                "stdout": self.stdout, "stderr": self.stderr,
                "resource_usage": self.resource_usage,
                "execution_time_ms": self.execution_time_ms, "sandbox_type": self.sandbox_type,
                "enforced": self.enforced, "truncated": self.truncated}


@dataclass
class Usage:
    """Usage measured by the supervisor (never reported by the untrusted side)."""

    memory_mb: float = 0.0
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    output_bytes: int = 0
    processes: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"memory_mb": round(self.memory_mb, 2), "cpu_seconds": round(self.cpu_seconds, 4),
                "wall_seconds": round(self.wall_seconds, 4), "output_bytes": self.output_bytes,
                "processes": self.processes, **self.extra}
