"""Resource limits: the eight knobs, their validation, and how one set is tighter than another."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from agenticraft.wire import network
from agenticraft.wire.errors import ConfigurationError


@dataclasses.dataclass(frozen=True)
class ResourceLimits:
    """Limits for one execution. Defaults follow the specification (512 MB, 50 %, 30 s)."""

    memory_mb: int = 512
    cpu_percent: float = 50.0
    timeout_seconds: float = 30.0
    max_file_size_mb: int = 10
    #: False, True, or a sorted tuple of allowed destinations (see ``wire.network``).
    network_access: network.NetworkAccess = False
    filesystem_access: bool = False
    max_output_bytes: int = 1_000_000
    max_processes: int = 32
    #: Bytes a run may move through its egress proxy (both directions); None: no budget.
    max_network_bytes: int | None = None

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            object.__setattr__(self, field.name, _coerce(field.name, getattr(self, field.name)))

    @classmethod
    def from_value(cls, value: ResourceLimits | Mapping[str, Any] | None,
                   base: ResourceLimits | None = None) -> ResourceLimits:
        """Build limits from a dict (unknown keys rejected), filling the rest from ``base``."""
        base = base or cls()
        if value is None:
            return base
        if isinstance(value, ResourceLimits):
            return value
        if not isinstance(value, Mapping):
            raise ConfigurationError(
                f"resource_limits must be a dict or ResourceLimits, not {type(value).__name__}")
        unknown = sorted(set(value) - set(LIMIT_NAMES))
        if unknown:
            raise ConfigurationError(
                f"Unknown resource limit(s) {', '.join(map(repr, unknown))}; "
                f"valid limits are: {', '.join(LIMIT_NAMES)}")
        return dataclasses.replace(base, **dict(value))

    def replace(self, **changes: Any) -> ResourceLimits:
        return ResourceLimits.from_value(changes, base=self)

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in LIMIT_NAMES}

    def looser_than(self, other: ResourceLimits) -> list[str]:
        """Names of the limits where ``self`` allows more than ``other``."""
        return [name for name in LIMIT_NAMES if is_looser(name, getattr(self, name),
                                                          getattr(other, name))]

    def tightened(self, other: ResourceLimits) -> ResourceLimits:
        """The strictest of both, limit by limit."""
        return ResourceLimits(**{name: strictest(name, getattr(self, name), getattr(other, name))
                                 for name in LIMIT_NAMES})


LIMIT_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ResourceLimits))
#: Limits that take true/false (network_access also takes a list of destinations).
BOOLEAN_LIMITS = frozenset({"network_access", "filesystem_access"})
INTEGER_LIMITS = frozenset({"memory_mb", "max_file_size_mb", "max_output_bytes", "max_processes",
                            "max_network_bytes"})
#: Limits whose default is "no limit" (None), which is looser than any number.
OPTIONAL_LIMITS = frozenset({"max_network_bytes"})
CPU_PERCENT_MAX = 100.0 * 1024  # several cores may be granted: 200 means two full cores


@dataclasses.dataclass(frozen=True)
class Usage:
    """What one run used, as the supervisor measured it (never as the sandboxed code says)."""

    memory_mb: float = 0.0
    cpu_seconds: float = 0.0
    output_bytes: int = 0

    @classmethod
    def measured(cls, raw: Mapping[str, Any]) -> Usage:
        """From the supervisor's measurements, rounded as results and records show them."""
        return cls(round(raw.get("memory_mb", 0.0), 2), round(raw.get("cpu_seconds", 0.0), 4),
                   raw.get("output_bytes", 0))

    def as_dict(self) -> dict[str, Any]:
        return {"memory_mb": self.memory_mb, "cpu_seconds": self.cpu_seconds,
                "output_bytes": self.output_bytes}  # (not dataclasses.asdict: it deep-copies)


def _coerce(name: str, value: Any) -> Any:
    """Validate one limit value; a clear ConfigurationError names the limit and what is valid."""
    if name == "network_access":
        return network.coerce(value)
    if name in OPTIONAL_LIMITS and (value is None or (
            isinstance(value, str) and value.strip().lower() in ("none", "unlimited"))):
        return None
    if name in BOOLEAN_LIMITS:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
            return _BOOL_WORDS[value.strip().lower()]
        raise ConfigurationError(f"{name} must be true or false, not {value!r}")
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigurationError(f"{name} must be a positive number, not {value!r}")
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise ConfigurationError(f"{name} must be a positive number, not {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise ConfigurationError(f"{name} must be a positive number, not {value!r}")
    if name in INTEGER_LIMITS:
        if number != int(number):
            raise ConfigurationError(f"{name} must be a whole number, not {value!r}")
        return value if isinstance(value, int) else int(number)  # no float rounding of ints
    if name == "cpu_percent" and number > CPU_PERCENT_MAX:
        raise ConfigurationError(f"cpu_percent must be at most {CPU_PERCENT_MAX:g}, not {value!r}")
    return number


_BOOL_WORDS = network.BOOL_WORDS  # one spelling of true/false for every boolean


def is_looser(name: str, value: Any, ceiling: Any) -> bool:
    """True when ``value`` allows more than ``ceiling`` for limit ``name``."""
    if name == "network_access":
        return network.is_looser(value, ceiling)
    if name in BOOLEAN_LIMITS:
        return bool(value) and not bool(ceiling)
    if name in OPTIONAL_LIMITS and (value is None or ceiling is None):
        return ceiling is not None
    return value > ceiling


def strictest(name: str, a: Any, b: Any) -> Any:
    if name == "network_access":
        return network.strictest(a, b)
    if name in BOOLEAN_LIMITS:
        return bool(a) and bool(b)
    if name in OPTIONAL_LIMITS and (a is None or b is None):
        return b if a is None else a
    return min(a, b)


def coerce_limit(name: str, value: Any) -> Any:
    """Public validation of a single limit (used by config loaders and magics)."""
    if name not in LIMIT_NAMES:
        raise ConfigurationError(
            f"Unknown resource limit {name!r}; valid limits are: {', '.join(LIMIT_NAMES)}")
    return _coerce(name, value)


def show_limit(name: str, value: Any) -> str:
    """A limit's value as messages write it (a destination list as ``[a, b]``)."""
    if name == "network_access" and isinstance(value, tuple):
        return "[" + ", ".join(value) + "]"
    return str(value)
