"""Sandbox type names."""

from __future__ import annotations

import enum

from agenticraft.wire.errors import ConfigurationError


class SandboxType(enum.StrEnum):
    """The sandboxes this engine offers (``"docker"`` is accepted for ``CONTAINER``: the
    specification calls it the Docker sandbox)."""

    RESTRICTED = "restricted"
    PROCESS = "process"
    CONTAINER = "container"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: SandboxType | str) -> SandboxType:
        if isinstance(value, SandboxType):
            return value
        from agenticraft.security.policy import canonical_sandbox_type
        try:
            return cls(canonical_sandbox_type(value))
        except ValueError:
            raise ConfigurationError(
                f"Unknown sandbox type {value!r}; valid types are: "
                f"{', '.join(t.value for t in cls)} (or 'docker' for 'container')") from None
