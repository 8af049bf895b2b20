"""What a sandboxed run returns to the host: ``ExecutionResult`` (agent API), ``RunReply``."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from agenticraft.wire.limits import Usage


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


@dataclass(frozen=True)
class RunReply:
    """What an executor-defined request returned (the kernel's cells, completions, comms).

    Unlike ``ExecutionResult`` (the names the code bound, for the agent API), ``reply`` is the
    executor's own answer, e.g. the content of a Jupyter reply from the IPython executor.
    ``success`` is False when the run did not finish (a crash, an interrupt that was not
    honoured); ``error`` then says why.
    """

    reply: dict[str, Any]
    success: bool = True
    error: ExecutionError | None = None
    stdout: str = ""
    stderr: str = ""
    usage: Usage = field(default_factory=Usage)
    execution_time_ms: float = 0.0
    enforced: dict[str, str] = field(default_factory=dict)
    truncated: bool = False
