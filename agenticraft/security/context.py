"""SecurityContext: who is asking, with which permissions, under which limits."""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterable, Mapping
from typing import Any

from agenticraft.security import permissions as perms
from agenticraft.wire.errors import ConfigurationError, PermissionDenied
from agenticraft.wire.limits import ResourceLimits


def current_user(env: Mapping[str, str] | None = None) -> str:
    """Who calls when nobody says: the hub user (``JUPYTERHUB_USER``, set by the hub's
    spawner), else the OS user."""
    env = os.environ if env is None else env
    hub_user = env.get("JUPYTERHUB_USER", "").strip()
    if hub_user:
        return hub_user
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid-{os.getuid()}"


class SecurityContext:
    """A user's request: ``SecurityContext(user_id, permissions, resource_limits)``.

    A context you build is only a *request*. ``Policy.resolve`` turns it into the effective
    context (granted permissions, limits within the ceilings); sandboxes run only resolved ones.
    ``permissions=None`` means "whatever the policy grants this user" (``execute`` until resolved).
    """

    __slots__ = ("_permissions", "groups", "image", "limit_request", "resolved",
                 "resource_limits", "sandbox_type", "user_id", "working_dir")

    def __init__(self, user_id: str, permissions: Iterable[str] | None = None,
                 resource_limits: ResourceLimits | Mapping[str, Any] | None = None, *,
                 groups: Iterable[str] = (), sandbox_type: str | None = None,
                 working_dir: str | None = None, image: str | None = None,
                 _resolved: bool = False) -> None:
        if not isinstance(user_id, str) or not user_id.strip():
            raise ConfigurationError(f"user_id must be a non-empty string, not {user_id!r}")
        self.user_id = user_id
        self._permissions = None if permissions is None else perms.normalize_all(permissions)
        self.resource_limits = ResourceLimits.from_value(resource_limits)
        # Only the limits the caller named are compared with the ceilings; the rest are defaults.
        self.limit_request: dict[str, Any] = (
            self.resource_limits.as_dict() if isinstance(resource_limits, ResourceLimits)
            else {k: getattr(self.resource_limits, k) for k in (resource_limits or {})})
        self.groups = frozenset(groups)
        self.sandbox_type = sandbox_type
        self.working_dir = working_dir
        self.image = image  # the container sandbox's image (None: the configured default)
        self.resolved = _resolved

    @classmethod
    def from_value(cls, value: SecurityContext | Mapping[str, Any] | None,
                   default_user: str = "anonymous") -> SecurityContext:
        """Accept the dict form the specification uses for ``user_context``."""
        if value is None:
            return cls(user_id=default_user)
        if isinstance(value, SecurityContext):
            return value
        if not isinstance(value, Mapping):
            raise ConfigurationError(
                f"user_context must be a dict or SecurityContext, not {type(value).__name__}")
        allowed = {"user_id", "permissions", "resource_limits", "groups", "sandbox_type",
                   "working_dir", "image"}
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise ConfigurationError(
                f"Unknown user_context key(s) {unknown}; valid keys are: {sorted(allowed)}")
        data = dict(value)
        data.setdefault("user_id", default_user)
        return cls(**data)

    def copy(self) -> SecurityContext:
        """An independent request with the same fields (callers' objects are never changed)."""
        other = SecurityContext(self.user_id, self._permissions, self.resource_limits,
                                groups=self.groups, sandbox_type=self.sandbox_type,
                                working_dir=self.working_dir, image=self.image)
        other.limit_request = dict(self.limit_request)
        return other

    @property
    def permissions(self) -> frozenset[str]:
        """The permissions held (``admin`` expanded to all)."""
        held = self._permissions if self._permissions is not None else frozenset({perms.EXECUTE})
        return perms.implied(held)

    @property
    def requested_permissions(self) -> frozenset[str] | None:
        return self._permissions

    def has_permission(self, permission: str) -> bool:
        return perms.normalize(permission) in self.permissions

    def require(self, permission: str) -> None:
        """Raise PermissionDenied unless the context holds ``permission``."""
        if not self.has_permission(permission):
            name = perms.normalize(permission)
            raise PermissionDenied(
                f"Permission denied: user {self.user_id!r} lacks the {name!r} permission. "
                f"Ask an administrator to grant {name!r} in the policy.",
                permission=name, user_id=self.user_id)

    def to_dict(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "permissions": sorted(self.permissions),
                "resource_limits": self.resource_limits.as_dict(),
                "groups": sorted(self.groups), "sandbox_type": self.sandbox_type,
                **({"image": self.image} if self.image else {})}

    def __repr__(self) -> str:
        return (f"SecurityContext(user_id={self.user_id!r}, permissions={sorted(self.permissions)}"
                f", resource_limits={self.resource_limits.as_dict()}, resolved={self.resolved})")
