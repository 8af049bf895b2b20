"""User-level configuration: built-in defaults < config file < environment.

These settings are *requests*. They are resolved through the administrator's ``Policy`` like any
other request, so nothing here can loosen a ceiling. The config file is the specification's
``config.py`` with a ``SECURITY_CONFIG`` dict; it is parsed, never executed.
"""

from __future__ import annotations

import ast
import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agenticraft.wire.errors import ConfigurationError
from agenticraft.wire.limits import LIMIT_NAMES, coerce_limit

ENV_PREFIX = "AGENTICRAFT_"
#: Short environment names the specification uses, besides AGENTICRAFT_DEFAULT_<LIMIT>.
ENV_ALIASES = {"AGENTICRAFT_DEFAULT_TIMEOUT": "timeout_seconds",
               "AGENTICRAFT_DEFAULT_CPU": "cpu_percent",
               "AGENTICRAFT_DEFAULT_MEMORY": "memory_mb"}
CONFIG_KEYS = ("default_sandbox_type", "enable_audit_logging", "audit_log_path", "container_image",
               *(f"default_{name}" for name in LIMIT_NAMES), "default_timeout")


def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "agenticraft" / "config.py"


def default_audit_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "agenticraft" / "audit.jsonl"


@dataclasses.dataclass(frozen=True)
class Settings:
    """Effective user-level settings and where each came from."""

    default_sandbox_type: str | None = None
    limit_defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    enable_audit_logging: bool = True
    audit_log_path: Path = dataclasses.field(default_factory=default_audit_path)
    container_image: str | None = None  # the container sandbox's image (the policy may limit it)
    origins: Mapping[str, str] = dataclasses.field(default_factory=dict)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The ``SECURITY_CONFIG`` dict of a config file, read with ``ast.literal_eval``."""
    path = Path(path)
    try:
        source = path.read_text()
    except OSError as exc:
        raise ConfigurationError(f"Cannot read config file {path}: {exc.strerror}") from None
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        raise ConfigurationError(f"Config file {path} line {exc.lineno}: {exc.msg}") from None
    found: ast.Assign | None = None
    for node in ast.walk(tree):
        targets = (node.targets if isinstance(node, ast.Assign)
                   else [node.target] if isinstance(node, ast.AugAssign | ast.AnnAssign) else [])
        for target in targets:
            touches = any(isinstance(n, ast.Name) and n.id == "SECURITY_CONFIG"
                          for n in ast.walk(target))
            if not touches:
                continue
            if (found is not None or not isinstance(node, ast.Assign)
                    or not isinstance(target, ast.Name) or node not in tree.body):
                raise ConfigurationError(
                    f"Config file {path} line {node.lineno}: assign SECURITY_CONFIG exactly "
                    "once, as a literal dict at the top level (the file is read, not run)")
            found = node
    if found is None:
        raise ConfigurationError(f"Config file {path} defines no SECURITY_CONFIG dict")
    try:
        value = ast.literal_eval(found.value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise ConfigurationError(
            f"Config file {path} line {found.lineno}: SECURITY_CONFIG must be a literal "
            "dict (strings, numbers, booleans)") from None
    if not isinstance(value, dict):
        raise ConfigurationError(f"Config file {path}: SECURITY_CONFIG must be a dict")
    return value


def load_settings(config_path: str | Path | None = None,
                  env: Mapping[str, str] | None = None) -> Settings:
    """Defaults < config file (``AGENTICRAFT_CONFIG`` or the standard path) < environment."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}

    path = Path(config_path) if config_path else (
        Path(env["AGENTICRAFT_CONFIG"]) if env.get("AGENTICRAFT_CONFIG")
        else default_config_path(env))
    if config_path or env.get("AGENTICRAFT_CONFIG") or path.exists():
        for key, value in read_config_file(path).items():
            _apply(values, origins, _config_key(key, path), value, f"config file {path}")

    for var, value in env.items():
        if not var.startswith(ENV_PREFIX) or var == "AGENTICRAFT_CONFIG":
            continue
        key = _env_key(var)
        if key is not None:
            _apply(values, origins, key, value, f"environment {var}")

    limits = {name: values.pop(name) for name in list(values) if name in LIMIT_NAMES}
    kwargs: dict[str, Any] = {"limit_defaults": limits, "origins": origins}
    if "default_sandbox_type" in values:
        kwargs["default_sandbox_type"] = values["default_sandbox_type"]
    if "enable_audit_logging" in values:
        kwargs["enable_audit_logging"] = values["enable_audit_logging"]
    if "container_image" in values:
        kwargs["container_image"] = values["container_image"]
    kwargs["audit_log_path"] = (Path(values["audit_log_path"]).expanduser()
                                if "audit_log_path" in values else default_audit_path(env))
    return Settings(**kwargs)


def _config_key(key: str, path: Path) -> str:
    if key not in CONFIG_KEYS:
        raise ConfigurationError(f"Config file {path}: unknown key {key!r}; valid keys are: "
                                 f"{', '.join(CONFIG_KEYS)}")
    if key == "default_timeout":
        return "timeout_seconds"
    if key.startswith("default_") and key[len("default_"):] in LIMIT_NAMES:
        return key[len("default_"):]
    return key


def _env_key(var: str) -> str | None:
    if var in ENV_ALIASES:
        return ENV_ALIASES[var]
    rest = var[len(ENV_PREFIX):].lower()
    if rest == "default_sandbox":
        return "default_sandbox_type"
    if rest in ("enable_audit_logging", "audit_log_path", "container_image"):
        return rest
    if rest == "audit_log":
        return "audit_log_path"
    if rest.startswith("default_"):
        name = rest[len("default_"):]
        if name not in LIMIT_NAMES:
            raise ConfigurationError(
                f"Unknown environment variable {var}; limits are set with AGENTICRAFT_DEFAULT_"
                f"<LIMIT> where LIMIT is one of: {', '.join(n.upper() for n in LIMIT_NAMES)}")
        return name
    return None  # other AGENTICRAFT_* variables belong to other components


def _apply(values: dict[str, Any], origins: dict[str, str], key: str, value: Any,
           origin: str) -> None:
    try:
        if key in LIMIT_NAMES:
            value = coerce_limit(key, value)
        elif key == "container_image":
            if not isinstance(value, str) or not value.strip():
                raise ConfigurationError(f"container_image must be an image name, not {value!r}")
            value = value.strip()
        elif key == "audit_log_path":
            if not isinstance(value, str) or not value.strip():
                raise ConfigurationError(f"audit_log_path must be a path string, not {value!r}")
        elif key == "enable_audit_logging":
            value = coerce_limit("filesystem_access", value)  # same boolean parsing
        elif key == "default_sandbox_type":
            from agenticraft.security.policy import SANDBOX_TYPES, canonical_sandbox_type
            value = canonical_sandbox_type(value)
            if value not in SANDBOX_TYPES:
                raise ConfigurationError(f"sandbox type must be one of {', '.join(SANDBOX_TYPES)},"
                                         f" not {value!r}")
    except ConfigurationError as exc:
        raise ConfigurationError(f"{origin}: {exc}") from None
    values[key] = value
    origins[key] = origin
