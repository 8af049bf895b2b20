"""Permission names, their aliases, and what ``admin`` implies."""

from __future__ import annotations

from collections.abc import Iterable

from agenticraft.wire.errors import ConfigurationError

EXECUTE = "execute"
EXECUTE_WORKFLOW = "execute_workflow"
READ_RESULTS = "read_results"
WRITE = "write"
ADMIN = "admin"

ALL_PERMISSIONS: tuple[str, ...] = (EXECUTE, EXECUTE_WORKFLOW, READ_RESULTS, WRITE, ADMIN)
ALIASES = {"read": READ_RESULTS}


def normalize(name: str) -> str:
    """Canonical permission name; unknown names are a ConfigurationError listing valid ones."""
    if not isinstance(name, str):
        raise ConfigurationError(f"A permission must be a string, not {name!r}")
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in ALL_PERMISSIONS:
        raise ConfigurationError(
            f"Unknown permission {name!r}; valid permissions are: "
            f"{', '.join(ALL_PERMISSIONS)} (and 'read' for read_results)")
    return key


def normalize_all(names: Iterable[str] | str | None) -> frozenset[str]:
    if names is None:
        return frozenset()
    if isinstance(names, str):
        names = [names]
    return frozenset(normalize(n) for n in names)


def implied(names: frozenset[str]) -> frozenset[str]:
    """Everything the set grants: ``admin`` implies all permissions."""
    return frozenset(ALL_PERMISSIONS) if ADMIN in names else names
