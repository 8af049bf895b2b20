"""Sandbox type names."""

from __future__ import annotations

import enum

from agenticraft.wire.errors import ConfigurationError


class SandboxType(enum.StrEnum):
    """The sandboxes this engine offers. ``DOCKER`` is named by the specification as future work."""

    RESTRICTED = "restricted"
    PROCESS = "process"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: SandboxType | str) -> SandboxType:
        if isinstance(value, SandboxType):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            raise ConfigurationError(
                f"Unknown sandbox type {value!r}; valid types are: "
                f"{', '.join(t.value for t in cls)} (Docker is not available yet)") from None
