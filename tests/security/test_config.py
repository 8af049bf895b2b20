"""Tests of user-level configuration: built-in defaults < config file < environment.

Every call passes an explicit ``env`` dict (with XDG paths under ``tmp_path``), so the real
environment and home directory are never read. Settings are requests: the administrator's policy
still decides, which the last section checks through ``Policy.resolve`` and ``SandboxManager``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agenticraft.sandbox.manager import SandboxManager
from agenticraft.security.audit import AuditLog
from agenticraft.security.config import (
    CONFIG_KEYS,
    Settings,
    default_audit_path,
    default_config_path,
    load_settings,
    read_config_file,
)
from agenticraft.security.context import SecurityContext
from agenticraft.security.policy import Policy
from agenticraft.wire.errors import ConfigurationError, PermissionDenied
from agenticraft.wire.limits import LIMIT_NAMES

SPEC_CONFIG = '''# config.py
SECURITY_CONFIG = {
    "default_sandbox_type": "restricted",
    "default_memory_mb": 256,
    "default_cpu_percent": 50.0,
    "enable_audit_logging": True
}
'''

SPEC_ENV = {
    "AGENTICRAFT_DEFAULT_SANDBOX": "process",
    "AGENTICRAFT_DEFAULT_MEMORY_MB": "512",
    "AGENTICRAFT_DEFAULT_TIMEOUT": "30",
}


@pytest.fixture
def env(tmp_path):
    """A clean environment whose standard config path is empty and inside tmp_path."""
    return {"XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
            "XDG_STATE_HOME": str(tmp_path / "xdg-state")}


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "config.py"
    path.write_text(SPEC_CONFIG)
    return path


def config_file(tmp_path, body, name="config.py"):
    path = tmp_path / name
    path.write_text(body)
    return path


# -- defaults -----------------------------------------------------------------------------------

def test_builtin_defaults(env, tmp_path):
    settings = load_settings(env=env)
    assert isinstance(settings, Settings)
    assert settings.default_sandbox_type is None
    assert dict(settings.limit_defaults) == {}
    assert settings.enable_audit_logging is True
    assert settings.audit_log_path == tmp_path / "xdg-state" / "agenticraft" / "audit.jsonl"
    assert dict(settings.origins) == {}


def test_default_paths_follow_xdg(tmp_path):
    env = {"XDG_CONFIG_HOME": str(tmp_path / "c"), "XDG_STATE_HOME": str(tmp_path / "s")}
    assert default_config_path(env) == tmp_path / "c" / "agenticraft" / "config.py"
    assert default_audit_path(env) == tmp_path / "s" / "agenticraft" / "audit.jsonl"


def test_does_not_read_the_process_environment(env, monkeypatch):
    monkeypatch.setenv("AGENTICRAFT_DEFAULT_MEMORY_MB", "128")
    monkeypatch.setenv("AGENTICRAFT_DEFAULT_SANDBOX", "restricted")
    settings = load_settings(env=env)
    assert dict(settings.limit_defaults) == {}
    assert settings.default_sandbox_type is None


def test_standard_config_path_is_read_when_present(env):
    path = default_config_path(env)
    path.parent.mkdir(parents=True)
    path.write_text(SPEC_CONFIG)
    settings = load_settings(env=env)
    assert settings.default_sandbox_type == "restricted"
    assert settings.limit_defaults["memory_mb"] == 256


# -- config file --------------------------------------------------------------------------------

def test_spec_config_file(env, spec_file):
    settings = load_settings(config_path=spec_file, env=env)
    assert settings.default_sandbox_type == "restricted"
    assert dict(settings.limit_defaults) == {"memory_mb": 256, "cpu_percent": 50.0}
    assert settings.enable_audit_logging is True
    assert str(spec_file) in settings.origins["memory_mb"]
    assert str(spec_file) in settings.origins["default_sandbox_type"]


def test_read_config_file_returns_the_literal(spec_file):
    assert read_config_file(spec_file) == {
        "default_sandbox_type": "restricted", "default_memory_mb": 256,
        "default_cpu_percent": 50.0, "enable_audit_logging": True}


def test_agenticraft_config_points_at_a_file(env, spec_file):
    settings = load_settings(env={**env, "AGENTICRAFT_CONFIG": str(spec_file)})
    assert settings.default_sandbox_type == "restricted"
    assert settings.limit_defaults["memory_mb"] == 256


def test_agenticraft_config_wins_over_standard_path(env, spec_file):
    standard = default_config_path(env)
    standard.parent.mkdir(parents=True)
    standard.write_text('SECURITY_CONFIG = {"default_memory_mb": 64}\n')
    settings = load_settings(env={**env, "AGENTICRAFT_CONFIG": str(spec_file)})
    assert settings.limit_defaults["memory_mb"] == 256


def test_explicit_config_path_wins_over_agenticraft_config(env, spec_file, tmp_path):
    other = config_file(tmp_path, 'SECURITY_CONFIG = {"default_memory_mb": 64}\n', "other.py")
    settings = load_settings(config_path=other, env={**env, "AGENTICRAFT_CONFIG": str(spec_file)})
    assert settings.limit_defaults["memory_mb"] == 64
    assert settings.default_sandbox_type is None


def test_agenticraft_config_missing_file_is_an_error(env, tmp_path):
    missing = tmp_path / "nowhere.py"
    with pytest.raises(ConfigurationError, match=re.escape(str(missing))):
        load_settings(env={**env, "AGENTICRAFT_CONFIG": str(missing)})
    with pytest.raises(ConfigurationError, match=re.escape(str(missing))):
        load_settings(config_path=missing, env=env)


def test_every_config_key(env, tmp_path):
    path = config_file(tmp_path, '''SECURITY_CONFIG = {
    "default_sandbox_type": "PROCESS",
    "enable_audit_logging": "no",
    "audit_log_path": "~/audit/log.jsonl",
    "default_memory_mb": "128",
    "default_cpu_percent": 25,
    "default_timeout_seconds": 12.5,
    "default_max_file_size_mb": 5,
    "default_network_access": "yes",
    "default_filesystem_access": False,
    "default_max_output_bytes": 4096,
    "default_max_processes": 3,
}
''')
    settings = load_settings(config_path=path, env=env)
    assert settings.default_sandbox_type == "process"
    assert settings.enable_audit_logging is False
    assert settings.audit_log_path == Path("~/audit/log.jsonl").expanduser()
    assert dict(settings.limit_defaults) == {
        "memory_mb": 128, "cpu_percent": 25.0, "timeout_seconds": 12.5, "max_file_size_mb": 5,
        "network_access": True, "filesystem_access": False, "max_output_bytes": 4096,
        "max_processes": 3}


def test_default_timeout_key_is_timeout_seconds(env, tmp_path):
    path = config_file(tmp_path, 'SECURITY_CONFIG = {"default_timeout": 7}\n')
    assert load_settings(config_path=path, env=env).limit_defaults == {"timeout_seconds": 7.0}


def test_config_keys_cover_every_limit():
    for name in LIMIT_NAMES:
        assert f"default_{name}" in CONFIG_KEYS


@pytest.mark.parametrize("key", ["default_memory", "memory_mb", "sandbox", "default_gpu",
                                 "enable_audit"])
def test_unknown_config_key_is_an_error_listing_valid_keys(env, tmp_path, key):
    path = config_file(tmp_path, f'SECURITY_CONFIG = {{"{key}": 1}}\n')
    with pytest.raises(ConfigurationError) as info:
        load_settings(config_path=path, env=env)
    message = str(info.value)
    assert repr(key) in message
    assert str(path) in message
    assert "default_memory_mb" in message


@pytest.mark.parametrize("entry,word", [
    ('"default_memory_mb": -1', "memory_mb"),
    ('"default_memory_mb": "lots"', "memory_mb"),
    ('"default_memory_mb": 1.5', "memory_mb"),
    ('"default_timeout": 0', "timeout_seconds"),
    ('"default_cpu_percent": True', "cpu_percent"),
    ('"default_network_access": "maybe"', "network_access"),
    ('"default_sandbox_type": "vm"', "vm"),
    ('"enable_audit_logging": "sometimes"', "sometimes"),
])
def test_bad_config_values_name_the_file_and_the_setting(env, tmp_path, entry, word):
    path = config_file(tmp_path, f"SECURITY_CONFIG = {{{entry}}}\n")
    with pytest.raises(ConfigurationError) as info:
        load_settings(config_path=path, env=env)
    assert str(path) in str(info.value)
    assert word in str(info.value)


@pytest.mark.parametrize("body,word", [
    ("SECURITY_CONFIG = {\n", "line"),
    ("x = 1\n", "SECURITY_CONFIG"),
    ("SECURITY_CONFIG = [1, 2]\n", "dict"),
    ('SECURITY_CONFIG = "default_memory_mb=1"\n', "dict"),
])
def test_malformed_config_files(env, tmp_path, body, word):
    path = config_file(tmp_path, body)
    with pytest.raises(ConfigurationError) as info:
        load_settings(config_path=path, env=env)
    assert str(path) in str(info.value)
    assert word in str(info.value)


# -- the config file is parsed, never executed --------------------------------------------------

def test_statements_around_security_config_are_not_executed(env, tmp_path):
    marker = tmp_path / "marker"
    path = config_file(tmp_path, f'''import os
os.system("touch {marker}")
open({str(marker)!r}, "w").write("ran")
raise SystemExit("executed")
SECURITY_CONFIG = {{"default_memory_mb": 128}}
''')
    settings = load_settings(config_path=path, env=env)
    assert settings.limit_defaults == {"memory_mb": 128}
    assert not marker.exists()


@pytest.mark.parametrize("expression", [
    '__import__("os").system("touch {marker}")',
    'open({marker!r}, "w").write("ran")',
    'exec("open({marker!r}, \'w\').write(\'ran\')")',
    '(lambda: open({marker!r}, "w").write("ran"))()',
    '[open({marker!r}, "w") for _ in range(1)][0]',
])
def test_non_literal_in_security_config_is_rejected_without_running(env, tmp_path, expression):
    marker = tmp_path / "marker"
    code = expression.format(marker=str(marker))
    path = config_file(tmp_path, f'SECURITY_CONFIG = {{"default_memory_mb": {code}}}\n')
    with pytest.raises(ConfigurationError) as info:
        load_settings(config_path=path, env=env)
    assert str(path) in str(info.value)
    assert "literal" in str(info.value)
    assert not marker.exists()


def test_function_call_building_the_dict_is_rejected(env, tmp_path):
    path = config_file(tmp_path, "SECURITY_CONFIG = dict(default_memory_mb=256)\n")
    with pytest.raises(ConfigurationError, match="literal"):
        load_settings(config_path=path, env=env)


# -- environment --------------------------------------------------------------------------------

def test_spec_environment_variables(env):
    settings = load_settings(env={**env, **SPEC_ENV})
    assert settings.default_sandbox_type == "process"
    assert dict(settings.limit_defaults) == {"memory_mb": 512, "timeout_seconds": 30.0}
    assert settings.origins["memory_mb"] == "environment AGENTICRAFT_DEFAULT_MEMORY_MB"
    assert settings.origins["timeout_seconds"] == "environment AGENTICRAFT_DEFAULT_TIMEOUT"
    assert settings.origins["default_sandbox_type"] == "environment AGENTICRAFT_DEFAULT_SANDBOX"


def test_environment_overrides_config_file_which_overrides_defaults(env, spec_file):
    settings = load_settings(config_path=spec_file, env={**env, **SPEC_ENV})
    assert settings.default_sandbox_type == "process"           # env over file
    assert settings.limit_defaults["memory_mb"] == 512           # env over file
    assert settings.limit_defaults["cpu_percent"] == 50.0        # file only
    assert settings.limit_defaults["timeout_seconds"] == 30.0    # env only
    assert "max_processes" not in settings.limit_defaults        # built-in default
    assert str(spec_file) in settings.origins["cpu_percent"]
    assert settings.origins["memory_mb"].startswith("environment")


def test_environment_overrides_agenticraft_config_file(env, spec_file):
    settings = load_settings(env={**env, "AGENTICRAFT_CONFIG": str(spec_file),
                                  "AGENTICRAFT_DEFAULT_MEMORY_MB": "64"})
    assert settings.limit_defaults["memory_mb"] == 64
    assert settings.default_sandbox_type == "restricted"


ENV_VALUES = {
    "memory_mb": ("300", 300), "cpu_percent": ("12.5", 12.5), "timeout_seconds": ("9", 9.0),
    "max_file_size_mb": ("3", 3), "network_access": ("true", True),
    "filesystem_access": ("off", False), "max_output_bytes": ("2048", 2048),
    "max_processes": ("2", 2), "max_network_bytes": ("1000000", 1_000_000),
}


@pytest.mark.parametrize("name", LIMIT_NAMES)
def test_agenticraft_default_limit_for_every_limit(env, name):
    text, expected = ENV_VALUES[name]
    var = f"AGENTICRAFT_DEFAULT_{name.upper()}"
    settings = load_settings(env={**env, var: text})
    assert dict(settings.limit_defaults) == {name: expected}
    assert type(settings.limit_defaults[name]) is type(expected)
    assert settings.origins[name] == f"environment {var}"


@pytest.mark.parametrize("var,name,text,expected", [
    ("AGENTICRAFT_DEFAULT_TIMEOUT", "timeout_seconds", "45", 45.0),
    ("AGENTICRAFT_DEFAULT_CPU", "cpu_percent", "75", 75.0),
    ("AGENTICRAFT_DEFAULT_MEMORY", "memory_mb", "1024", 1024),
])
def test_short_environment_aliases(env, var, name, text, expected):
    assert load_settings(env={**env, var: text}).limit_defaults == {name: expected}


def test_audit_environment_variables(env, tmp_path):
    settings = load_settings(env={**env, "AGENTICRAFT_ENABLE_AUDIT_LOGGING": "0",
                                  "AGENTICRAFT_AUDIT_LOG": str(tmp_path / "a.jsonl")})
    assert settings.enable_audit_logging is False
    assert settings.audit_log_path == tmp_path / "a.jsonl"
    settings = load_settings(env={**env, "AGENTICRAFT_AUDIT_LOG_PATH": str(tmp_path / "b")})
    assert settings.audit_log_path == tmp_path / "b"


def test_unrelated_variables_are_ignored(env):
    settings = load_settings(env={**env, "AGENTICRAFT_KERNEL_NAME": "x", "HOME": "/nowhere",
                                  "DEFAULT_MEMORY_MB": "1",
                                  "MY_AGENTICRAFT_DEFAULT_MEMORY_MB": "1"})
    assert dict(settings.limit_defaults) == {}
    assert settings.default_sandbox_type is None


@pytest.mark.parametrize("var,value,word", [
    ("AGENTICRAFT_DEFAULT_MEMORY_MB", "lots", "memory_mb"),
    ("AGENTICRAFT_DEFAULT_MEMORY_MB", "-1", "memory_mb"),
    ("AGENTICRAFT_DEFAULT_MEMORY_MB", "0", "memory_mb"),
    ("AGENTICRAFT_DEFAULT_MEMORY_MB", "1.5", "memory_mb"),
    ("AGENTICRAFT_DEFAULT_MEMORY_MB", "", "memory_mb"),
    ("AGENTICRAFT_DEFAULT_TIMEOUT", "nan", "timeout_seconds"),
    ("AGENTICRAFT_DEFAULT_TIMEOUT_SECONDS", "inf", "timeout_seconds"),
    ("AGENTICRAFT_DEFAULT_CPU_PERCENT", "fast", "cpu_percent"),
    ("AGENTICRAFT_DEFAULT_NETWORK_ACCESS", "maybe", "network_access"),
    ("AGENTICRAFT_DEFAULT_MAX_PROCESSES", "2.5", "max_processes"),
    ("AGENTICRAFT_DEFAULT_SANDBOX", "vm", "vm"),
    ("AGENTICRAFT_ENABLE_AUDIT_LOGGING", "sometimes", "sometimes"),
])
def test_bad_environment_values_name_the_variable(env, var, value, word):
    with pytest.raises(ConfigurationError) as info:
        load_settings(env={**env, var: value})
    assert var in str(info.value)
    assert word in str(info.value)


@pytest.mark.parametrize("var", ["AGENTICRAFT_DEFAULT_GPU", "AGENTICRAFT_DEFAULT_MEMORYMB",
                                 "AGENTICRAFT_DEFAULT_"])
def test_unknown_default_variable_is_an_error_listing_limits(env, var):
    with pytest.raises(ConfigurationError) as info:
        load_settings(env={**env, var: "1"})
    assert var in str(info.value)
    assert "MEMORY_MB" in str(info.value)


def test_bad_environment_value_fails_even_with_a_good_file(env, spec_file):
    with pytest.raises(ConfigurationError, match="AGENTICRAFT_DEFAULT_MEMORY_MB"):
        load_settings(config_path=spec_file,
                      env={**env, "AGENTICRAFT_DEFAULT_MEMORY_MB": "a lot"})


# -- settings cannot loosen the administrator's policy ------------------------------------------

ADMIN_POLICY = Policy.from_dict({
    "ceilings": {"memory_mb": 1024, "timeout_seconds": 60, "network_access": False},
    "grants": {"default": ["execute", "read_results"]},
    "sandbox": {"allowed_types": ["process"], "default_type": "process"},
}, source="admin-policy.toml")


def test_settings_within_policy_are_applied(env, spec_file):
    settings = load_settings(config_path=spec_file,
                             env={**env, "AGENTICRAFT_DEFAULT_MEMORY_MB": "512"})
    ctx = ADMIN_POLICY.resolve({"user_id": "alice"}, limit_defaults=settings.limit_defaults)
    assert ctx.resource_limits.memory_mb == 512
    assert ctx.resource_limits.cpu_percent == 50.0


def test_config_file_above_ceiling_is_denied(env, tmp_path):
    path = config_file(tmp_path, 'SECURITY_CONFIG = {"default_memory_mb": 8192}\n')
    settings = load_settings(config_path=path, env=env)
    with pytest.raises(PermissionDenied) as info:
        ADMIN_POLICY.resolve({"user_id": "alice"}, limit_defaults=settings.limit_defaults)
    assert "memory_mb" in str(info.value)
    assert "1024" in str(info.value)
    assert info.value.ceiling == 1024


@pytest.mark.parametrize("var,value,name", [
    ("AGENTICRAFT_DEFAULT_MEMORY_MB", "4096", "memory_mb"),
    ("AGENTICRAFT_DEFAULT_TIMEOUT", "3600", "timeout_seconds"),
    ("AGENTICRAFT_DEFAULT_NETWORK_ACCESS", "true", "network_access"),
])
def test_environment_above_ceiling_is_denied(env, var, value, name):
    settings = load_settings(env={**env, var: value})
    with pytest.raises(PermissionDenied, match=name):
        ADMIN_POLICY.resolve({"user_id": "alice"}, limit_defaults=settings.limit_defaults)


def manager(tmp_path, settings, policy=ADMIN_POLICY):
    log = tmp_path / "a.jsonl"
    return SandboxManager(policy=policy, settings=settings, audit_log=log,
                          working_dir=tmp_path), AuditLog(log)


def test_manager_denies_settings_above_ceiling_and_audits(env, tmp_path):
    path = config_file(tmp_path, 'SECURITY_CONFIG = {"default_memory_mb": 8192}\n')
    settings = load_settings(config_path=path, env=env)
    mgr, log = manager(tmp_path, settings)
    with pytest.raises(PermissionDenied, match="memory_mb"):
        mgr.authorize({"user_id": "alice"}, "execute", action="run")
    records = log.query(event_type="authorization")
    assert len(records) == 1
    record = records[0]
    assert record["allowed"] is False
    assert record["user_id"] == "alice"
    assert record["permission"] == "execute"
    assert "memory_mb" in record["reason"]
    assert log.query(user_id="alice", event_type="authorization") == records
    assert log.verify().ok


def test_manager_denies_environment_above_ceiling(env, tmp_path):
    settings = load_settings(env={**env, "AGENTICRAFT_DEFAULT_NETWORK_ACCESS": "on"})
    mgr, log = manager(tmp_path, settings)
    with pytest.raises(PermissionDenied, match="network_access"):
        mgr.authorize(SecurityContext("bob"), "execute")
    [record] = log.query(event_type="authorization")
    assert record["allowed"] is False
    assert record["user_id"] == "bob"


def test_manager_denies_user_level_sandbox_type_the_policy_forbids(env, spec_file, tmp_path):
    # The spec's config file asks for the restricted sandbox; this policy allows only process.
    settings = load_settings(config_path=spec_file, env=env)
    mgr, log = manager(tmp_path, settings)
    with pytest.raises(PermissionDenied, match="restricted"):
        mgr.authorize({"user_id": "alice"}, "execute")
    assert [r["allowed"] for r in log.query(event_type="authorization")] == [False]


def test_manager_authorize_success_writes_an_allowed_record(env, tmp_path):
    settings = load_settings(env={**env, **SPEC_ENV})
    mgr, log = manager(tmp_path, settings)
    ctx = mgr.authorize({"user_id": "alice", "permissions": ["execute"]}, "execute",
                        action="run cell")
    assert ctx.resolved is True
    assert ctx.resource_limits.memory_mb == 512
    assert ctx.resource_limits.timeout_seconds == 30.0
    assert ctx.sandbox_type == "process"
    assert ctx.working_dir == str(tmp_path.resolve())
    [record] = log.query(event_type="authorization")
    assert record["allowed"] is True
    assert record["user_id"] == "alice"
    assert record["permission"] == "execute"
    assert record["sandbox_type"] == "process"
    assert record["action"] == "run cell"
    assert log.verify().ok


def test_manager_denies_missing_permission_and_audits(env, tmp_path):
    mgr, log = manager(tmp_path, load_settings(env=env))
    with pytest.raises(PermissionDenied, match="write"):
        mgr.authorize({"user_id": "alice"}, "write")
    with pytest.raises(PermissionDenied, match="admin"):
        mgr.authorize(SecurityContext("alice", ["admin"], _resolved=True), "execute")
    ok = mgr.authorize({"user_id": "alice"}, "read")
    assert ok.has_permission("read_results")
    assert [r["allowed"] for r in log.query(event_type="authorization")] == [False, False, True]


def test_limit_overrides_cannot_loosen_either(env, tmp_path):
    mgr, log = manager(tmp_path, load_settings(env=env))
    with pytest.raises(PermissionDenied, match="timeout_seconds"):
        mgr.authorize({"user_id": "alice"}, "execute", limit_overrides={"timeout_seconds": 61})
    ctx = mgr.authorize({"user_id": "alice"}, "execute", limit_overrides={"timeout_seconds": 5})
    assert ctx.resource_limits.timeout_seconds == 5.0
    assert [r["allowed"] for r in log.query(event_type="authorization")] == [False, True]


def test_audit_logging_disabled_writes_nothing(env, tmp_path):
    state = tmp_path / "xdg-state"
    settings = load_settings(env={**env, "AGENTICRAFT_ENABLE_AUDIT_LOGGING": "false"})
    mgr = SandboxManager(policy=ADMIN_POLICY, settings=settings, working_dir=tmp_path)
    mgr.authorize({"user_id": "alice"}, "execute")
    assert not state.exists()


def test_audit_log_path_from_settings_is_used(env, tmp_path):
    target = tmp_path / "logs" / "audit.jsonl"
    settings = load_settings(env={**env, "AGENTICRAFT_AUDIT_LOG": str(target)})
    mgr = SandboxManager(policy=ADMIN_POLICY, settings=settings, working_dir=tmp_path)
    mgr.authorize({"user_id": "alice"}, "execute")
    [record] = AuditLog(target).query(event_type="authorization")
    assert record["allowed"] is True
