"""The administrator's policy: ceilings and grants, and the one place a request is resolved.

``Policy.resolve`` is the only code that compares a requested limit or permission with what the
administrator allows. A request above a ceiling, or for a permission not granted, raises
``PermissionDenied`` naming the ceiling; nothing is silently raised.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from agenticraft.security import permissions as perms
from agenticraft.security.context import SecurityContext
from agenticraft.wire.errors import ConfigurationError, PermissionDenied
from agenticraft.wire.limits import LIMIT_NAMES, ResourceLimits, coerce_limit, is_looser

SANDBOX_TYPES = ("process", "restricted")

#: Where an administrator puts the policy. Users cannot point the engine elsewhere to loosen it:
#: extra policy files (a kernel's ``--policy``) are intersected with this one, never replace it.
SYSTEM_POLICY_PATH = Path("/etc/agenticraft/policy.toml")
#: Mechanisms a policy may require (``[sandbox] require = [...]``); the names of the jail's probe.
REQUIRABLE = ("rlimits", "namespaces", "mounts", "landlock", "seccomp", "cgroups", "pids_cgroup")

BUILTIN_CEILINGS = ResourceLimits(
    memory_mb=4096, cpu_percent=100.0, timeout_seconds=600, max_file_size_mb=1024,
    network_access=True, filesystem_access=True, max_output_bytes=50_000_000, max_processes=256)
BUILTIN_DEFAULT_GRANTS = frozenset({perms.EXECUTE, perms.EXECUTE_WORKFLOW, perms.READ_RESULTS,
                                    perms.WRITE})


@dataclasses.dataclass(frozen=True)
class Policy:
    """Ceilings per limit, grants per user and group, and sandbox rules.

    Without a policy file the machine's owner is the administrator: generous ceilings, and
    everyone may ``execute``, ``execute_workflow``, ``read_results`` and ``write`` (not ``admin``).
    """

    ceilings: ResourceLimits = BUILTIN_CEILINGS
    defaults: ResourceLimits = dataclasses.field(default_factory=ResourceLimits)
    default_grants: frozenset[str] = BUILTIN_DEFAULT_GRANTS
    user_grants: Mapping[str, frozenset[str]] = dataclasses.field(default_factory=dict)
    group_grants: Mapping[str, frozenset[str]] = dataclasses.field(default_factory=dict)
    groups: Mapping[str, frozenset[str]] = dataclasses.field(default_factory=dict)
    allowed_sandbox_types: frozenset[str] = frozenset(SANDBOX_TYPES)
    default_sandbox_type: str = "process"
    allow_unsandboxed: bool = False
    allowed_imports: frozenset[str] = frozenset()
    #: Confinement mechanisms the process sandbox must have: without one, no code runs.
    required_mechanisms: frozenset[str] = frozenset()
    api_keys: Mapping[str, str] = dataclasses.field(default_factory=dict)
    signing_key: str | None = None
    sources: tuple[str, ...] = ("built-in",)
    also: tuple[Policy, ...] = ()

    # -- grants ---------------------------------------------------------------------------------
    def groups_of(self, user_id: str) -> frozenset[str]:
        return frozenset(g for g, members in self.groups.items() if user_id in members)

    def granted_permissions(self, user_id: str) -> frozenset[str]:
        """Everything the administrator grants ``user_id`` (``admin`` expanded)."""
        if user_id in self.user_grants:
            held = set(self.user_grants[user_id])
        else:
            held = set(self.default_grants)
        for group in self.groups_of(user_id):
            held |= self.group_grants.get(group, frozenset())
        granted = perms.implied(frozenset(held))
        for other in self.also:
            granted &= other.granted_permissions(user_id)
        return granted

    # -- resolution -----------------------------------------------------------------------------
    def resolve(self, requested: SecurityContext | Mapping[str, Any] | None,
                *, limit_defaults: Mapping[str, Any] | None = None,
                default_user: str = "anonymous",
                working_root: str | Path | None = None) -> SecurityContext:
        """Intersect a request with this policy and return the effective, resolved context.

        ``limit_defaults`` are user-level defaults (config file, environment, kernel config):
        they are requests like any other and may not exceed a ceiling either.
        ``working_root`` is the directory the host program works in: a requested
        ``working_dir`` may narrow it to a subdirectory, never point elsewhere.
        """
        request = SecurityContext.from_value(requested, default_user=default_user)
        user = request.user_id

        granted = self.granted_permissions(user)
        wanted = request.requested_permissions
        if wanted is None:
            effective_perms = granted
        else:
            missing = sorted(perms.implied(wanted) - granted)
            if missing:
                raise PermissionDenied(
                    f"Permission denied: user {user!r} asked for {', '.join(missing)} but the "
                    f"administrator's policy ({self.source_text()}) grants only "
                    f"{', '.join(sorted(granted)) or 'nothing'}. Ask an administrator to grant it.",
                    permission=missing[0], user_id=user, ceiling=sorted(granted))
            effective_perms = perms.implied(wanted)

        limits = self.defaults.tightened(self.ceilings)
        asked = {**(limit_defaults or {}), **request.limit_request}
        changes = {}
        for name, value in asked.items():
            value = coerce_limit(name, value)
            ceiling = getattr(self.ceilings, name)
            if is_looser(name, value, ceiling):
                raise PermissionDenied(
                    f"Permission denied: {name}={value} is above the administrator's ceiling "
                    f"{name}={ceiling} ({self.source_text()}). Ask for {ceiling} or less.",
                    permission=name, user_id=user, ceiling=ceiling)
            changes[name] = value
        limits = limits.replace(**changes)

        sandbox_type = request.sandbox_type or self.default_sandbox_type
        self.check_sandbox_type(sandbox_type, user)
        working_dir = self.check_working_dir(request.working_dir, working_root, user)
        return SecurityContext(user, effective_perms, limits, groups=self.groups_of(user),
                               sandbox_type=sandbox_type, working_dir=working_dir,
                               _resolved=True)

    @staticmethod
    def check_working_dir(requested: str | None, root: str | Path | None,
                          user: str = "") -> str | None:
        """A requested working directory must lie inside the host's working root."""
        if root is None:
            return requested
        base = os.path.realpath(root)
        if requested is None:
            return base
        wanted = os.path.realpath(os.path.join(base, requested))
        if wanted != base and not wanted.startswith(base.rstrip("/") + "/"):
            raise PermissionDenied(
                f"Permission denied: working_dir {requested!r} is outside the working directory "
                f"{base!r} that this host allows; ask for {base!r} or a directory inside it.",
                permission="working_dir", user_id=user, ceiling=base)
        return wanted

    def check_sandbox_type(self, sandbox_type: str, user: str = "") -> None:
        if sandbox_type not in SANDBOX_TYPES:
            raise ConfigurationError(
                f"Unknown sandbox type {sandbox_type!r}; "
                f"valid types are: {', '.join(SANDBOX_TYPES)}")
        if sandbox_type not in self.allowed_sandbox_types:
            raise PermissionDenied(
                f"Permission denied: the administrator's policy ({self.source_text()}) does not "
                f"allow the {sandbox_type!r} sandbox; allowed: "
                f"{', '.join(sorted(self.allowed_sandbox_types))}.",
                permission="sandbox_type", user_id=user,
                ceiling=sorted(self.allowed_sandbox_types))

    # -- identity -------------------------------------------------------------------------------
    def user_for_api_key(self, api_key: str) -> str | None:
        digest = hashlib.sha256(api_key.encode()).hexdigest()
        for known, user in self.api_keys.items():
            if hmac.compare_digest(known, digest):
                return user
        return None

    # -- combination ----------------------------------------------------------------------------
    def intersect(self, other: Policy) -> Policy:
        """A policy at least as strict as both: how extra policy files can only tighten."""
        return dataclasses.replace(
            self,
            ceilings=self.ceilings.tightened(other.ceilings),
            defaults=self.defaults.tightened(other.defaults),
            allowed_sandbox_types=self.allowed_sandbox_types & other.allowed_sandbox_types,
            default_sandbox_type=(other.default_sandbox_type
                                  if other.default_sandbox_type in self.allowed_sandbox_types
                                  else self.default_sandbox_type),
            allow_unsandboxed=self.allow_unsandboxed and other.allow_unsandboxed,
            allowed_imports=self.allowed_imports & other.allowed_imports,
            required_mechanisms=self.required_mechanisms | other.required_mechanisms,
            # Identities come only from the base policy: a later file may not add API keys or a
            # signing key, or it could make itself any user.
            api_keys=dict(self.api_keys),
            signing_key=self.signing_key,
            sources=self.sources + other.sources,
            also=(*self.also, other),
        )

    def source_text(self) -> str:
        return " + ".join(self.sources)

    # -- loading --------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "dict") -> Policy:
        """Build a policy from the TOML structure documented in docs/policy.md."""
        _reject_unknown(data, {"ceilings", "defaults", "grants", "groups", "sandbox", "api_keys",
                               "signing_key"}, source)
        kwargs: dict[str, Any] = {"sources": (source,)}
        if "ceilings" in data:
            kwargs["ceilings"] = ResourceLimits.from_value(
                _limits(data["ceilings"], f"{source} [ceilings]"), base=BUILTIN_CEILINGS)
        if "defaults" in data:
            kwargs["defaults"] = ResourceLimits.from_value(
                _limits(data["defaults"], f"{source} [defaults]"))
        grants = data.get("grants", {})
        _reject_unknown(grants, {"default", "users", "groups"}, f"{source} [grants]")
        if "default" in grants:
            kwargs["default_grants"] = _permissions(grants["default"], f"{source} grants.default")
        kwargs["user_grants"] = {
            u: _permissions(p, f"{source} grants.users.{u}")
            for u, p in _table(grants.get("users", {}), f"{source} [grants.users]").items()}
        kwargs["group_grants"] = {
            g: _permissions(p, f"{source} grants.groups.{g}")
            for g, p in _table(grants.get("groups", {}), f"{source} [grants.groups]").items()}
        members = _table(data.get("groups", {}), f"{source} [groups]")
        kwargs["groups"] = {g: frozenset(_strings(m, f"{source} groups.{g}"))
                            for g, m in members.items()}
        sandbox = data.get("sandbox", {})
        _reject_unknown(sandbox, {"allowed_types", "default_type", "allow_unsandboxed",
                                  "allowed_imports", "require"}, f"{source} [sandbox]")
        if "require" in sandbox:
            wanted = frozenset(_strings(sandbox["require"], "sandbox.require"))
            bad = sorted(wanted - set(REQUIRABLE))
            if bad:
                raise ConfigurationError(f"{source}: sandbox.require names unknown mechanism(s) "
                                         f"{bad}; valid: {', '.join(REQUIRABLE)}")
            kwargs["required_mechanisms"] = wanted
        if "allowed_types" in sandbox:
            types = frozenset(_strings(sandbox["allowed_types"], "sandbox.allowed_types"))
            bad = sorted(types - set(SANDBOX_TYPES))
            if bad:
                raise ConfigurationError(f"{source}: unknown sandbox type(s) {bad}; valid: "
                                         f"{', '.join(SANDBOX_TYPES)}")
            kwargs["allowed_sandbox_types"] = types
        if "default_type" in sandbox:
            kwargs["default_sandbox_type"] = str(sandbox["default_type"])
        if "allow_unsandboxed" in sandbox:
            kwargs["allow_unsandboxed"] = coerce_limit("network_access",
                                                       sandbox["allow_unsandboxed"])
        if "allowed_imports" in sandbox:
            kwargs["allowed_imports"] = frozenset(_strings(sandbox["allowed_imports"],
                                                           "sandbox.allowed_imports"))
        keys = _table(data.get("api_keys", {}), f"{source} [api_keys]")
        if not all(isinstance(v, str) for v in keys.values()):
            raise ConfigurationError(f"{source} [api_keys]: each key's SHA-256 digest must map "
                                     "to a user id string")
        kwargs["api_keys"] = dict(keys)
        if "signing_key" in data:
            if not isinstance(data["signing_key"], str) or not data["signing_key"]:
                raise ConfigurationError(f"{source}: signing_key must be a non-empty string")
            kwargs["signing_key"] = data["signing_key"]
        policy = cls(**kwargs)
        if policy.default_sandbox_type not in policy.allowed_sandbox_types:
            raise ConfigurationError(f"{source}: default_type {policy.default_sandbox_type!r} "
                                     f"is not among allowed_types")
        return policy

    @classmethod
    def from_file(cls, path: str | Path) -> Policy:
        path = Path(path)
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except UnicodeDecodeError:
            raise ConfigurationError(f"Policy file {path} is not UTF-8 text") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"Policy file {path} is not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigurationError(f"Cannot read policy file {path}: {exc.strerror}") from None
        return cls.from_dict(data, source=str(path))


def load_policy(extra: Iterable[str | Path] = (), *,
                system_path: str | Path | None = SYSTEM_POLICY_PATH) -> Policy:
    """The administrator's policy: the system file (if present) intersected with any extras."""
    policy = Policy()
    if system_path is not None and Path(system_path).exists():
        policy = Policy.from_file(system_path)
    for path in extra:
        # Extra files only tighten, and never add identities (API keys, signing keys): those
        # come from the system file or from a Policy object the host program builds.
        policy = policy.intersect(Policy.from_file(path))
    return policy


def _reject_unknown(data: Any, allowed: set[str], where: str) -> None:
    if not isinstance(data, Mapping):
        raise ConfigurationError(f"{where}: expected a table, got {type(data).__name__}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigurationError(
            f"{where}: unknown key(s) {unknown}; valid keys: {sorted(allowed)}")


def _table(data: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ConfigurationError(f"{where}: expected a table, got {type(data).__name__}")
    return data


def _permissions(value: Any, where: str) -> frozenset[str]:
    return perms.normalize_all(_strings(value, where))


def _limits(data: Any, where: str) -> dict[str, Any]:
    _reject_unknown(data, set(LIMIT_NAMES), where)
    return {k: coerce_limit(k, v) for k, v in data.items()}


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigurationError(f"{where} must be a list of strings, not {value!r}")
    return value
