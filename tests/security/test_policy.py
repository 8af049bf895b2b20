"""Tests of the administrator's Policy: resolution, loading, intersection.

``Policy.resolve`` is the one place a request meets the policy, so besides example tests there
are property-based tests that compare it with an independent oracle over random policies and
requests, and that check monotonicity and that intersection only ever tightens.
"""

from __future__ import annotations

import hashlib
import re

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from agenticraft.security import permissions as perms
from agenticraft.security.context import SecurityContext
from agenticraft.security.policy import (
    BUILTIN_CEILINGS,
    BUILTIN_DEFAULT_GRANTS,
    SANDBOX_TYPES,
    Policy,
    load_policy,
)
from agenticraft.wire.errors import ConfigurationError, PermissionDenied
from agenticraft.wire.limits import (
    BOOLEAN_LIMITS,
    INTEGER_LIMITS,
    LIMIT_NAMES,
    OPTIONAL_LIMITS,
    ResourceLimits,
    is_looser,
)

ALL = frozenset(perms.ALL_PERMISSIONS)
ORDINARY = frozenset({"execute", "execute_workflow", "read_results", "write"})


def write(path, text):
    path.write_text(text)
    return path


def sha(text):
    return hashlib.sha256(text.encode()).hexdigest()


TIGHT = Policy.from_dict({
    "ceilings": {"memory_mb": 256, "timeout_seconds": 10, "cpu_percent": 50,
                 "network_access": False, "filesystem_access": True, "max_processes": 4},
    "defaults": {"memory_mb": 1024, "timeout_seconds": 5, "network_access": True},
    "grants": {"default": ["execute"], "users": {"root": ["admin"], "auditor": ["read"]},
               "groups": {"staff": ["write"], "ops": ["execute_workflow"]}},
    "groups": {"staff": ["carol", "root"], "ops": ["carol"]},
    "sandbox": {"allowed_types": ["restricted"], "default_type": "restricted"},
}, source="tight.toml")


# -- resolve: limits ----------------------------------------------------------------------------

def test_builtin_policy_resolves_defaults():
    ctx = Policy().resolve({"user_id": "alice"})
    assert ctx.resolved is True
    assert ctx.user_id == "alice"
    assert ctx.resource_limits == ResourceLimits()
    assert ctx.permissions == BUILTIN_DEFAULT_GRANTS == ORDINARY
    assert ctx.sandbox_type == "process"
    assert "admin" not in ctx.permissions


def test_defaults_are_clipped_to_ceilings():
    ctx = TIGHT.resolve({"user_id": "alice"})
    limits = ctx.resource_limits
    assert limits.memory_mb == 256          # default 1024, ceiling 256
    assert limits.timeout_seconds == 5.0    # default 5, ceiling 10
    assert limits.network_access is False   # default True, ceiling False
    assert limits.cpu_percent == 50.0
    assert limits.max_processes == 4        # default 32, ceiling 4
    assert limits.looser_than(TIGHT.ceilings) == []


def test_request_within_ceiling_is_granted_exactly():
    ctx = TIGHT.resolve({"user_id": "alice",
                         "resource_limits": {"memory_mb": 100, "timeout_seconds": 10}})
    assert ctx.resource_limits.memory_mb == 100
    assert ctx.resource_limits.timeout_seconds == 10.0
    assert ctx.resource_limits.max_processes == 4


@pytest.mark.parametrize("name,value,ceiling", [
    ("memory_mb", 257, 256), ("memory_mb", 10_000, 256), ("timeout_seconds", 10.5, 10),
    ("cpu_percent", 51, 50), ("max_processes", 5, 4),
])
def test_request_above_ceiling_denied_naming_limit_and_ceiling(name, value, ceiling):
    with pytest.raises(PermissionDenied) as info:
        TIGHT.resolve({"user_id": "alice", "resource_limits": {name: value}})
    exc = info.value
    message = str(exc)
    assert name in message
    assert str(ceiling) in message
    assert "tight.toml" in message  # says which policy
    assert exc.permission == name
    assert exc.ceiling == ceiling
    assert exc.user_id == "alice"


def test_request_at_ceiling_allowed():
    ctx = TIGHT.resolve({"user_id": "a", "resource_limits": {"memory_mb": 256, "cpu_percent": 50,
                                                             "timeout_seconds": 10}})
    assert (ctx.resource_limits.memory_mb, ctx.resource_limits.cpu_percent) == (256, 50.0)


def test_builtin_ceiling_is_enforced():
    too_much = BUILTIN_CEILINGS.memory_mb + 1
    with pytest.raises(PermissionDenied, match=str(BUILTIN_CEILINGS.memory_mb)):
        Policy().resolve({"user_id": "a", "resource_limits": {"memory_mb": too_much}})


@pytest.mark.parametrize("value", [True, "yes", "true", "1", "on"])
def test_boolean_ceiling_false_denies_true(value):
    with pytest.raises(PermissionDenied) as info:
        TIGHT.resolve({"user_id": "a", "resource_limits": {"network_access": value}})
    assert "network_access" in str(info.value)
    assert info.value.ceiling is False


def test_boolean_ceiling_false_allows_false_and_true_ceiling_allows_true():
    assert TIGHT.resolve({"user_id": "a", "resource_limits": {"network_access": False}}
                         ).resource_limits.network_access is False
    ctx = TIGHT.resolve({"user_id": "a", "resource_limits": {"filesystem_access": True}})
    assert ctx.resource_limits.filesystem_access is True


def test_full_limits_object_is_compared_limit_by_limit():
    # A ResourceLimits request names every limit, so its 512 MB default is above the 256 ceiling.
    with pytest.raises(PermissionDenied, match="memory_mb"):
        TIGHT.resolve(SecurityContext("a", resource_limits=ResourceLimits()))
    ok = ResourceLimits(memory_mb=128, timeout_seconds=1, cpu_percent=5, max_processes=2)
    assert TIGHT.resolve(SecurityContext("a", resource_limits=ok)).resource_limits == ok


def test_invalid_limit_in_request_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="memory_mb"):
        TIGHT.resolve({"user_id": "a", "resource_limits": {"memory_mb": -1}})
    with pytest.raises(ConfigurationError, match="gpus"):
        TIGHT.resolve({"user_id": "a", "resource_limits": {"gpus": 1}})


# -- resolve: limit_defaults (user-level settings) ----------------------------------------------

def test_limit_defaults_within_ceiling_are_applied():
    ctx = TIGHT.resolve({"user_id": "a"}, limit_defaults={"memory_mb": 64, "timeout_seconds": 2})
    assert ctx.resource_limits.memory_mb == 64
    assert ctx.resource_limits.timeout_seconds == 2.0


@pytest.mark.parametrize("defaults,name", [
    ({"memory_mb": 1024}, "memory_mb"), ({"network_access": True}, "network_access"),
    ({"network_access": "yes"}, "network_access"), ({"timeout_seconds": "60"}, "timeout_seconds"),
])
def test_limit_defaults_above_ceiling_are_denied(defaults, name):
    with pytest.raises(PermissionDenied, match=name) as info:
        TIGHT.resolve({"user_id": "a"}, limit_defaults=defaults)
    assert info.value.permission == name


def test_request_overrides_limit_defaults():
    ctx = TIGHT.resolve({"user_id": "a", "resource_limits": {"memory_mb": 32}},
                        limit_defaults={"memory_mb": 64, "timeout_seconds": 3})
    assert ctx.resource_limits.memory_mb == 32
    assert ctx.resource_limits.timeout_seconds == 3.0


def test_bad_limit_defaults_are_configuration_errors():
    with pytest.raises(ConfigurationError, match="memory_mb"):
        TIGHT.resolve({"user_id": "a"}, limit_defaults={"memory_mb": "lots"})
    with pytest.raises(ConfigurationError, match="swap_mb"):
        TIGHT.resolve({"user_id": "a"}, limit_defaults={"swap_mb": 1})


# -- resolve: permissions -----------------------------------------------------------------------

def test_ordinary_user_asking_for_admin_is_denied():
    with pytest.raises(PermissionDenied) as info:
        Policy().resolve({"user_id": "mallory", "permissions": ["execute", "admin"]})
    assert info.value.permission == "admin"
    assert "admin" in str(info.value)
    assert "mallory" in str(info.value)


def test_requested_permissions_are_kept_exactly():
    ctx = Policy().resolve({"user_id": "a", "permissions": ["read"]})
    assert ctx.permissions == frozenset({"read_results"})
    assert not ctx.has_permission("execute")


def test_permissions_none_means_the_users_grants():
    assert Policy().resolve(SecurityContext("a")).permissions == ORDINARY
    assert TIGHT.resolve(SecurityContext("a")).permissions == frozenset({"execute"})
    assert TIGHT.resolve(SecurityContext("root")).permissions == ALL


def test_default_grants_limit_ordinary_users():
    ctx = TIGHT.resolve({"user_id": "dave", "permissions": ["execute"]})
    assert ctx.permissions == frozenset({"execute"})
    with pytest.raises(PermissionDenied, match="write"):
        TIGHT.resolve({"user_id": "dave", "permissions": ["execute", "write"]})


def test_user_grants():
    assert TIGHT.resolve({"user_id": "root", "permissions": ["admin"]}).permissions == ALL
    ctx = TIGHT.resolve({"user_id": "auditor", "permissions": ["read_results"]})
    assert ctx.permissions == frozenset({"read_results"})
    # a per-user entry replaces the default grants: the auditor may not execute
    with pytest.raises(PermissionDenied, match="execute"):
        TIGHT.resolve({"user_id": "auditor", "permissions": ["execute"]})


def test_group_grants_via_groups_table():
    ctx = TIGHT.resolve({"user_id": "carol"})
    assert ctx.permissions == frozenset({"execute", "write", "execute_workflow"})
    assert ctx.groups == frozenset({"staff", "ops"})
    assert TIGHT.resolve({"user_id": "carol", "permissions": ["write"]}).permissions == {"write"}
    with pytest.raises(PermissionDenied, match="admin"):
        TIGHT.resolve({"user_id": "carol", "permissions": ["admin"]})


def test_self_declared_groups_grant_nothing():
    with pytest.raises(PermissionDenied, match="write"):
        TIGHT.resolve({"user_id": "eve", "groups": ["staff"], "permissions": ["write"]})
    ctx = TIGHT.resolve({"user_id": "eve", "groups": ["staff"]})
    assert ctx.groups == frozenset()
    assert ctx.permissions == frozenset({"execute"})


def test_granted_permissions():
    assert TIGHT.granted_permissions("nobody") == frozenset({"execute"})
    assert TIGHT.granted_permissions("root") == ALL
    assert TIGHT.groups_of("carol") == frozenset({"staff", "ops"})
    assert Policy().granted_permissions("anyone") == ORDINARY


def test_policy_without_grants_denies_everything():
    closed = Policy.from_dict({"grants": {"default": []}})
    with pytest.raises(PermissionDenied, match="execute"):
        closed.resolve({"user_id": "a", "permissions": ["execute"]})
    assert closed.resolve({"user_id": "a"}).permissions == frozenset()


# -- resolve: sandbox types and trust -----------------------------------------------------------

def test_sandbox_type_not_allowed_is_denied():
    with pytest.raises(PermissionDenied) as info:
        TIGHT.resolve({"user_id": "a", "sandbox_type": "process"})
    assert "process" in str(info.value)
    assert info.value.permission == "sandbox_type"


def test_default_sandbox_type_used():
    assert TIGHT.resolve({"user_id": "a"}).sandbox_type == "restricted"
    assert TIGHT.resolve({"user_id": "a", "sandbox_type": "restricted"}).sandbox_type == \
        "restricted"
    assert Policy().resolve({"user_id": "a", "sandbox_type": "restricted"}).sandbox_type == \
        "restricted"


@pytest.mark.parametrize("kind", ["vm", "none", ""])
def test_unknown_sandbox_type_is_a_configuration_error(kind):
    request = SecurityContext("a", sandbox_type=kind or "   ")
    with pytest.raises(ConfigurationError, match="sandbox type"):
        Policy().resolve(request)


def test_context_claiming_to_be_resolved_is_still_checked():
    forged = SecurityContext("mallory", ["admin"], _resolved=True)
    with pytest.raises(PermissionDenied, match="admin"):
        Policy().resolve(forged)
    forged = SecurityContext("mallory", ["execute"], {"memory_mb": 100_000}, _resolved=True)
    with pytest.raises(PermissionDenied, match="memory_mb"):
        Policy().resolve(forged)
    forged = SecurityContext("mallory", ["execute"], {"network_access": True})
    forged.resolved = True
    with pytest.raises(PermissionDenied, match="network_access"):
        TIGHT.resolve(forged)


def test_resolve_returns_a_new_context_and_leaves_the_request_alone():
    request = SecurityContext("a", ["execute"], {"memory_mb": 64})
    ctx = TIGHT.resolve(request)
    assert ctx is not request
    assert request.resolved is False
    assert request.resource_limits.timeout_seconds == 30.0
    assert ctx.resource_limits.timeout_seconds == 5.0


def test_resolved_context_resolves_again_to_the_same():
    ctx = TIGHT.resolve({"user_id": "carol", "resource_limits": {"memory_mb": 100}})
    again = TIGHT.resolve(ctx)
    assert again.resource_limits == ctx.resource_limits
    assert again.permissions == ctx.permissions


def test_resolve_none_is_anonymous():
    ctx = Policy().resolve(None)
    assert ctx.user_id == "anonymous"
    assert Policy().resolve(None, default_user="kernel").user_id == "kernel"


# -- from_dict / from_file ----------------------------------------------------------------------

FULL_TOML = f"""
signing_key = "s3cret"

[ceilings]
memory_mb = 2048
cpu_percent = 200
timeout_seconds = 120
max_file_size_mb = 50
network_access = false
filesystem_access = true
max_output_bytes = 2000000
max_processes = 16

[defaults]
memory_mb = 256
timeout_seconds = 10

[grants]
default = ["execute", "read"]
users = {{ root = ["admin"], alice = ["execute", "execute_workflow"] }}
groups = {{ teachers = ["write"] }}

[groups]
teachers = ["bob", "carol"]

[sandbox]
allowed_types = ["process", "restricted"]
default_type = "restricted"
allow_unsandboxed = false
allowed_imports = ["math", "json"]

[api_keys]
{sha("key-1")} = "alice"
"""


def test_from_file_reads_every_section(tmp_path):
    path = write(tmp_path / "policy.toml", FULL_TOML)
    policy = Policy.from_file(path)
    assert policy.sources == (str(path),)
    assert policy.ceilings == ResourceLimits(
        memory_mb=2048, cpu_percent=200, timeout_seconds=120, max_file_size_mb=50,
        network_access=False, filesystem_access=True, max_output_bytes=2_000_000,
        max_processes=16)
    assert policy.defaults.memory_mb == 256
    assert policy.defaults.timeout_seconds == 10.0
    assert policy.defaults.cpu_percent == ResourceLimits().cpu_percent
    assert policy.default_grants == frozenset({"execute", "read_results"})
    assert policy.user_grants == {"root": frozenset({"admin"}),
                                  "alice": frozenset({"execute", "execute_workflow"})}
    assert policy.group_grants == {"teachers": frozenset({"write"})}
    assert policy.groups == {"teachers": frozenset({"bob", "carol"})}
    assert policy.allowed_sandbox_types == frozenset({"process", "restricted"})
    assert policy.default_sandbox_type == "restricted"
    assert policy.allow_unsandboxed is False
    assert policy.allowed_imports == frozenset({"math", "json"})
    assert policy.signing_key == "s3cret"
    assert policy.user_for_api_key("key-1") == "alice"

    ctx = policy.resolve({"user_id": "bob"})
    assert ctx.permissions == frozenset({"execute", "read_results", "write"})
    assert ctx.sandbox_type == "restricted"
    assert ctx.resource_limits.memory_mb == 256
    with pytest.raises(PermissionDenied) as info:
        policy.resolve({"user_id": "bob", "resource_limits": {"memory_mb": 4096}})
    assert str(path) in str(info.value)
    assert "2048" in str(info.value)


def test_partial_ceilings_keep_builtin_ceilings_for_the_rest():
    policy = Policy.from_dict({"ceilings": {"memory_mb": 100}})
    assert policy.ceilings.memory_mb == 100
    assert policy.ceilings.timeout_seconds == BUILTIN_CEILINGS.timeout_seconds
    assert policy.ceilings.max_processes == BUILTIN_CEILINGS.max_processes


def test_empty_dict_is_the_builtin_policy():
    policy = Policy.from_dict({})
    assert policy.ceilings == Policy().ceilings
    assert policy.default_grants == Policy().default_grants
    assert policy.allowed_sandbox_types == frozenset(SANDBOX_TYPES)


@pytest.mark.parametrize("data,word", [
    ({"extras": {}}, "extras"),
    ({"ceiling": {"memory_mb": 1}}, "ceiling"),
    ({"ceilings": {"gpu": 1}}, "gpu"),
    ({"defaults": {"memroy_mb": 1}}, "memroy_mb"),
    ({"grants": {"superusers": ["x"]}}, "superusers"),
    ({"sandbox": {"docker": True}}, "docker"),
])
def test_unknown_sections_and_keys_rejected(data, word):
    with pytest.raises(ConfigurationError, match=word):
        Policy.from_dict(data)


@pytest.mark.parametrize("data,word", [
    ({"grants": {"default": ["execute", "sudo"]}}, "sudo"),
    ({"grants": {"users": {"alice": ["root"]}}}, "root"),
    ({"grants": {"groups": {"staff": ["everything"]}}}, "everything"),
])
def test_bad_permission_names_rejected(data, word):
    with pytest.raises(ConfigurationError, match=word):
        Policy.from_dict(data)


@pytest.mark.parametrize("data,word", [
    ({"ceilings": {"memory_mb": "lots"}}, "memory_mb"),
    ({"ceilings": {"memory_mb": -1}}, "memory_mb"),
    ({"ceilings": {"memory_mb": 1.5}}, "memory_mb"),
    ({"ceilings": {"timeout_seconds": 0}}, "timeout_seconds"),
    ({"ceilings": {"network_access": "maybe"}}, "network_access"),
    ({"defaults": {"cpu_percent": True}}, "cpu_percent"),
    ({"ceilings": 5}, "table"),
    ({"ceilings": ["memory_mb"]}, "table"),
    ({"defaults": "fast"}, "table"),
    ({"grants": ["execute"]}, "grants"),
    ({"sandbox": "process"}, "sandbox"),
    ({"groups": {"staff": "alice"}}, "groups.staff"),
    ({"groups": {"staff": [1, 2]}}, "groups.staff"),
    ({"sandbox": {"allowed_types": "process"}}, "allowed_types"),
    ({"sandbox": {"allowed_types": ["vm"]}}, "vm"),
    ({"sandbox": {"allowed_imports": "math"}}, "allowed_imports"),
    ({"sandbox": {"allow_unsandboxed": "perhaps"}}, "perhaps"),
    ({"sandbox": {"allowed_types": ["process"], "default_type": "restricted"}}, "default_type"),
    ({"sandbox": {"default_type": "vm"}}, "default_type"),
])
def test_bad_types_and_values_rejected(data, word):
    with pytest.raises(ConfigurationError, match=word):
        Policy.from_dict(data)


def test_from_file_unknown_key_names_the_file(tmp_path):
    path = write(tmp_path / "p.toml", "[ceilings]\nmemory = 5\n")
    with pytest.raises(ConfigurationError) as info:
        Policy.from_file(path)
    assert str(path) in str(info.value)
    assert "memory" in str(info.value)


@pytest.mark.parametrize("text", [
    "[ceilings\nmemory_mb = 1\n", "memory_mb = = 1\n", "[ceilings]\nmemory_mb = 1\nmemory_mb = 2\n",
    "[ceilings]\nmemory_mb = 'unterminated\n",
])
def test_invalid_toml_is_a_configuration_error_naming_the_path(tmp_path, text):
    path = write(tmp_path / "broken.toml", text)
    with pytest.raises(ConfigurationError) as info:
        Policy.from_file(path)
    assert str(path) in str(info.value)
    assert "TOML" in str(info.value)


def test_missing_or_unreadable_policy_file(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigurationError, match=r"nope\.toml"):
        Policy.from_file(missing)
    with pytest.raises(ConfigurationError, match=re.escape(str(tmp_path))):
        Policy.from_file(tmp_path)  # a directory


# -- load_policy --------------------------------------------------------------------------------

SYSTEM_TOML = """
[ceilings]
memory_mb = 1024
timeout_seconds = 60
network_access = false

[grants]
default = ["execute", "read_results"]
users = { root = ["admin"] }

[sandbox]
allowed_types = ["process"]
default_type = "process"
allowed_imports = ["math"]
"""

LOOSER_TOML = """
[ceilings]
memory_mb = 8192
timeout_seconds = 600
network_access = true

[defaults]
memory_mb = 4096
network_access = true

[grants]
default = ["admin"]
users = { mallory = ["admin"] }

[sandbox]
allowed_types = ["process", "restricted"]
default_type = "restricted"
allow_unsandboxed = true
allowed_imports = ["math", "os", "subprocess"]
"""

TIGHTER_TOML = """
[ceilings]
memory_mb = 256
timeout_seconds = 5

[grants]
default = ["execute"]
"""


def test_missing_system_file_gives_the_builtin_policy(tmp_path):
    policy = load_policy(system_path=tmp_path / "absent.toml")
    assert policy == Policy()
    assert policy.sources == ("built-in",)
    assert load_policy(system_path=None) == Policy()


def test_system_file_is_loaded(tmp_path):
    system = write(tmp_path / "policy.toml", SYSTEM_TOML)
    policy = load_policy(system_path=system)
    assert policy.ceilings.memory_mb == 1024
    assert policy.sources == (str(system),)


def test_looser_extra_file_cannot_loosen(tmp_path):
    system = write(tmp_path / "policy.toml", SYSTEM_TOML)
    extra = write(tmp_path / "mine.toml", LOOSER_TOML)
    policy = load_policy(extra=[extra], system_path=system)
    assert policy.ceilings.memory_mb == 1024
    assert policy.ceilings.timeout_seconds == 60.0
    assert policy.ceilings.network_access is False
    assert policy.allowed_sandbox_types == frozenset({"process"})
    assert policy.default_sandbox_type == "process"
    assert policy.allow_unsandboxed is False
    assert policy.allowed_imports == frozenset({"math"})
    assert policy.granted_permissions("mallory") == frozenset({"execute", "read_results"})
    assert policy.granted_permissions("someone") == frozenset({"execute", "read_results"})

    for request in (
        {"user_id": "mallory", "permissions": ["admin"]},
        {"user_id": "mallory", "permissions": ["write"]},
        {"user_id": "u", "resource_limits": {"memory_mb": 2048}},
        {"user_id": "u", "resource_limits": {"timeout_seconds": 61}},
        {"user_id": "u", "resource_limits": {"network_access": True}},
        {"user_id": "u", "sandbox_type": "restricted"},
    ):
        with pytest.raises(PermissionDenied):
            policy.resolve(request)
    ctx = policy.resolve({"user_id": "u"})
    assert ctx.resource_limits.memory_mb <= 1024
    assert ctx.resource_limits.network_access is False
    assert ctx.sandbox_type == "process"
    assert str(extra) in policy.source_text()
    assert str(system) in policy.source_text()


def test_tighter_extra_file_tightens(tmp_path):
    system = write(tmp_path / "policy.toml", SYSTEM_TOML)
    extra = write(tmp_path / "tight.toml", TIGHTER_TOML)
    policy = load_policy(extra=[extra], system_path=system)
    assert policy.ceilings.memory_mb == 256
    assert policy.ceilings.timeout_seconds == 5.0
    assert policy.granted_permissions("someone") == frozenset({"execute"})
    assert policy.granted_permissions("root") == frozenset({"execute"})
    with pytest.raises(PermissionDenied, match="256"):
        policy.resolve({"user_id": "u", "resource_limits": {"memory_mb": 512}})
    with pytest.raises(PermissionDenied, match="read_results"):
        policy.resolve({"user_id": "u", "permissions": ["read_results"]})
    ctx = policy.resolve({"user_id": "u"})
    assert ctx.resource_limits.memory_mb == 256
    assert ctx.resource_limits.timeout_seconds == 5.0


def test_several_extras_are_all_intersected(tmp_path):
    system = write(tmp_path / "policy.toml", SYSTEM_TOML)
    looser = write(tmp_path / "a.toml", LOOSER_TOML)
    tighter = write(tmp_path / "b.toml", TIGHTER_TOML)
    for order in ([looser, tighter], [tighter, looser]):
        policy = load_policy(extra=order, system_path=system)
        assert policy.ceilings.memory_mb == 256
        assert policy.ceilings.network_access is False
        assert policy.granted_permissions("mallory") == frozenset({"execute"})


def test_extra_without_system_file_tightens_the_builtin(tmp_path):
    extra = write(tmp_path / "tight.toml", TIGHTER_TOML)
    policy = load_policy(extra=[extra], system_path=tmp_path / "absent.toml")
    assert policy.ceilings.memory_mb == 256
    looser = write(tmp_path / "loose.toml", LOOSER_TOML)
    policy = load_policy(extra=[looser], system_path=None)
    assert policy.ceilings.looser_than(BUILTIN_CEILINGS) == []
    assert "admin" not in policy.granted_permissions("mallory")


def test_bad_extra_file_is_an_error_not_ignored(tmp_path):
    bad = write(tmp_path / "bad.toml", "[ceilings\n")
    with pytest.raises(ConfigurationError, match=r"bad\.toml"):
        load_policy(extra=[bad], system_path=None)
    with pytest.raises(ConfigurationError, match=r"missing\.toml"):
        load_policy(extra=[tmp_path / "missing.toml"], system_path=None)


def test_bad_system_file_is_an_error(tmp_path):
    system = write(tmp_path / "policy.toml", "[ceilings]\nmemory_mb = -5\n")
    with pytest.raises(ConfigurationError, match="memory_mb"):
        load_policy(system_path=system)


# -- api keys -----------------------------------------------------------------------------------

def test_user_for_api_key_uses_sha256_digests():
    policy = Policy.from_dict({"api_keys": {sha("alpha-key"): "alice", sha("beta-key"): "bob"}})
    assert policy.user_for_api_key("alpha-key") == "alice"
    assert policy.user_for_api_key("beta-key") == "bob"
    assert policy.user_for_api_key("gamma-key") is None
    assert policy.user_for_api_key("") is None
    assert policy.user_for_api_key(sha("alpha-key")) is None  # the digest is not the key


def test_plain_text_keys_in_the_table_do_not_match():
    policy = Policy.from_dict({"api_keys": {"alpha-key": "alice"}})
    assert policy.user_for_api_key("alpha-key") is None


# -- intersect (examples) -----------------------------------------------------------------------

def test_intersect_examples():
    a = Policy.from_dict({"ceilings": {"memory_mb": 100, "network_access": True},
                          "grants": {"default": ["execute", "write"]},
                          "sandbox": {"allowed_imports": ["math", "json"]}}, source="a")
    b = Policy.from_dict({"ceilings": {"memory_mb": 200, "network_access": False},
                          "grants": {"default": ["execute", "read"]},
                          "sandbox": {"allowed_types": ["restricted"],
                                      "default_type": "restricted",
                                      "allowed_imports": ["json", "os"]}}, source="b")
    both = a.intersect(b)
    assert both.ceilings.memory_mb == 100
    assert both.ceilings.network_access is False
    assert both.granted_permissions("x") == frozenset({"execute"})
    assert both.allowed_sandbox_types == frozenset({"restricted"})
    assert both.default_sandbox_type == "restricted"
    assert both.allowed_imports == frozenset({"json"})
    assert both.sources == ("a", "b")
    assert both.resolve({"user_id": "x"}).sandbox_type == "restricted"


# -- property-based -----------------------------------------------------------------------------

USERS = ("alice", "bob", "carol", "root")
GROUPS = ("staff", "ops")
PERM_NAMES = tuple(perms.ALL_PERMISSIONS)


def valid_value(name, upper=None):
    """Valid values for ``name``; with ``upper``, only values not looser than it."""
    if name in BOOLEAN_LIMITS:
        return st.just(False) if upper is False else st.booleans()
    if name in INTEGER_LIMITS:
        top = 100_000 if upper is None else upper
        picks = [v for v in (1, 2, 16, 64, 256, 512, 1024, 4096) if v <= top]
        return st.sampled_from(picks) | st.integers(1, top) if picks else st.integers(1, top)
    top = (800.0 if name == "cpu_percent" else 1000.0) if upper is None else upper
    picks = [v for v in (0.5, 1.0, 10.0, 30.0, 50.0, 100.0, 600.0) if v <= top]
    floats = st.floats(min(0.01, top), top, allow_nan=False, allow_infinity=False)
    return st.sampled_from(picks) | floats if picks else floats


def invalid_value(name):
    if name in BOOLEAN_LIMITS:
        return st.sampled_from(["maybe", None, 3, ""])
    bad = [0, -1, -2.5, float("nan"), float("inf"), "lots", True]
    if name not in OPTIONAL_LIMITS:  # None is "no limit" for those: valid, not a bad value
        bad.append(None)
    if name in INTEGER_LIMITS:
        bad.append(1.5)
    return st.sampled_from(bad)


def limits_objects():
    return st.fixed_dictionaries({n: valid_value(n) for n in LIMIT_NAMES}).map(
        lambda d: ResourceLimits(**d))


perm_sets = st.frozensets(st.sampled_from(PERM_NAMES), max_size=5)


@st.composite
def policies(draw):
    allowed = draw(st.frozensets(st.sampled_from(SANDBOX_TYPES), min_size=1))
    return Policy(
        ceilings=draw(limits_objects()),
        defaults=draw(limits_objects()),
        default_grants=draw(perm_sets),
        user_grants=draw(st.dictionaries(st.sampled_from(USERS), perm_sets, max_size=3)),
        group_grants=draw(st.dictionaries(st.sampled_from(GROUPS), perm_sets, max_size=2)),
        groups=draw(st.dictionaries(st.sampled_from(GROUPS),
                                    st.frozensets(st.sampled_from(USERS)), max_size=2)),
        allowed_sandbox_types=allowed,
        default_sandbox_type=draw(st.sampled_from(sorted(allowed))),
        sources=(draw(st.sampled_from(["p1", "p2", "p3"])),),
    )


user_ids = st.sampled_from(USERS) | st.text(min_size=1, max_size=8).filter(str.strip)
requested_perms = st.none() | st.frozensets(st.sampled_from((*PERM_NAMES, "read")), max_size=4)


@st.composite
def requests(draw, allow_invalid=True):
    """(request dict, whether it holds an invalid limit value)."""
    names = draw(st.lists(st.sampled_from(LIMIT_NAMES), unique=True, max_size=8))
    limits = {}
    invalid = False
    for name in names:
        if allow_invalid and draw(st.integers(0, 9)) == 0:
            limits[name] = draw(invalid_value(name))
            invalid = True
        else:
            limits[name] = draw(valid_value(name))
    request = {"user_id": draw(user_ids), "resource_limits": limits}
    wanted = draw(requested_perms)
    if wanted is not None:
        request["permissions"] = sorted(wanted)
    kind = draw(st.none() | st.sampled_from(SANDBOX_TYPES))
    if kind is not None:
        request["sandbox_type"] = kind
    return request, invalid


limit_defaults_st = st.lists(st.sampled_from(LIMIT_NAMES), unique=True, max_size=4).flatmap(
    lambda names: st.fixed_dictionaries({n: valid_value(n) for n in names}))


def oracle_grants(policy, user):
    """What the administrator grants ``user``, computed independently of the module."""
    held = set(policy.user_grants[user]) if user in policy.user_grants else set(
        policy.default_grants)
    for group, members in policy.groups.items():
        if user in members:
            held |= set(policy.group_grants.get(group, ()))
    return set(PERM_NAMES) if "admin" in held else held


def oracle_wanted(request):
    if "permissions" not in request:
        return None
    wanted = {"read_results" if p == "read" else p for p in request["permissions"]}
    return set(PERM_NAMES) if "admin" in wanted else wanted


def looser(name, value, ceiling):
    if name in BOOLEAN_LIMITS:
        return value and not ceiling
    return value > ceiling


def resolve_or_exception(policy, request, limit_defaults=None):
    try:
        return policy.resolve(request, limit_defaults=limit_defaults)
    except (PermissionDenied, ConfigurationError) as exc:
        return exc


SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(policies(), requests(), limit_defaults_st)
def test_resolve_never_exceeds_the_policy(policy, drawn, limit_defaults):
    request, invalid = drawn
    outcome = resolve_or_exception(policy, request, limit_defaults)

    # Independent oracle of what should happen.
    if invalid:
        event("invalid request")
        assert isinstance(outcome, ConfigurationError), outcome
        return
    user = request["user_id"]
    granted = oracle_grants(policy, user)
    wanted = oracle_wanted(request)
    asked = {**limit_defaults, **request["resource_limits"]}
    over = [n for n, v in asked.items() if looser(n, v, getattr(policy.ceilings, n))]
    kind = request.get("sandbox_type", policy.default_sandbox_type)
    denied = ((wanted is not None and not wanted <= granted) or bool(over)
              or kind not in policy.allowed_sandbox_types)
    if denied:
        event("denied")
        assert isinstance(outcome, PermissionDenied), (outcome, over)
        return
    event("resolved")
    assert isinstance(outcome, SecurityContext), outcome
    ctx = outcome
    assert ctx.resolved is True
    assert ctx.user_id == user
    assert ctx.sandbox_type == kind
    assert ctx.sandbox_type in policy.allowed_sandbox_types
    # every limit within its ceiling
    for name in LIMIT_NAMES:
        value = getattr(ctx.resource_limits, name)
        assert not is_looser(name, value, getattr(policy.ceilings, name)), name
        if name in asked:
            assert value == asked[name], name
        else:
            expected = (getattr(policy.defaults, name) and getattr(policy.ceilings, name)
                        if name in BOOLEAN_LIMITS
                        else min(getattr(policy.defaults, name), getattr(policy.ceilings, name)))
            assert value == expected, name
    # every permission granted
    assert ctx.permissions <= policy.granted_permissions(user)
    assert set(ctx.permissions) <= granted
    assert set(ctx.permissions) == (granted if wanted is None else wanted)


@st.composite
def policy_and_fitting_request(draw):
    """A policy and a request that stays within its ceilings and grants."""
    policy = draw(policies())
    user = draw(user_ids)
    names = draw(st.lists(st.sampled_from(LIMIT_NAMES), unique=True, max_size=8))
    limits = {n: draw(valid_value(n, upper=getattr(policy.ceilings, n))) for n in names}
    granted = sorted(policy.granted_permissions(user))
    request = {"user_id": user, "resource_limits": limits,
               "sandbox_type": draw(st.sampled_from(sorted(policy.allowed_sandbox_types)))}
    if draw(st.booleans()):
        request["permissions"] = draw(st.lists(st.sampled_from(granted), unique=True)
                                      if granted else st.just([]))
    return policy, request


def smaller(draw, name, value):
    if name in BOOLEAN_LIMITS:
        return draw(st.booleans()) if value else False
    if name in INTEGER_LIMITS:
        return draw(st.integers(1, value))
    return value * draw(st.sampled_from([1.0, 0.75, 0.5, 0.1]))


@SETTINGS
@given(policy_and_fitting_request(), st.data())
def test_resolve_is_monotonic(drawn, data):
    policy, a_request = drawn
    a = policy.resolve(a_request)  # within ceilings and grants: must resolve
    b_limits = {n: smaller(data.draw, n, v) for n, v in a_request["resource_limits"].items()}
    for name in data.draw(st.lists(st.sampled_from(LIMIT_NAMES), unique=True, max_size=3)):
        if name not in b_limits:
            b_limits[name] = smaller(data.draw, name, getattr(a.resource_limits, name))
    b_request = {"user_id": a_request["user_id"], "resource_limits": b_limits,
                 "sandbox_type": a_request["sandbox_type"]}
    if "permissions" in a_request:
        b_request["permissions"] = data.draw(
            st.lists(st.sampled_from(a_request["permissions"]), unique=True)
            if a_request["permissions"] else st.just([]))
    elif data.draw(st.booleans()):
        b_request["permissions"] = data.draw(
            st.lists(st.sampled_from(sorted(a.permissions)), unique=True)
            if a.permissions else st.just([]))
    b = policy.resolve(b_request)
    for name in LIMIT_NAMES:
        assert not is_looser(name, getattr(b.resource_limits, name),
                             getattr(a.resource_limits, name)), name
    assert b.permissions <= a.permissions


@SETTINGS
@given(policies(), policies(), requests(allow_invalid=False), limit_defaults_st)
def test_intersection_lets_no_more_through_than_either(p, q, drawn, limit_defaults):
    request, _ = drawn
    both = p.intersect(q)
    # structure
    assert both.ceilings.looser_than(p.ceilings) == []
    assert both.ceilings.looser_than(q.ceilings) == []
    assert both.allowed_sandbox_types <= p.allowed_sandbox_types & q.allowed_sandbox_types
    assert both.allow_unsandboxed <= (p.allow_unsandboxed and q.allow_unsandboxed)
    assert both.allowed_imports <= p.allowed_imports & q.allowed_imports
    for user in (*USERS, request["user_id"]):
        assert both.granted_permissions(user) <= (
            p.granted_permissions(user) & q.granted_permissions(user))
    # behaviour
    r_both = resolve_or_exception(both, request, limit_defaults)
    event(f"intersection {'denied' if isinstance(r_both, Exception) else 'resolved'}")
    if isinstance(r_both, Exception):
        return
    for single in (p, q):
        r_single = single.resolve(request, limit_defaults=limit_defaults)
        for name in LIMIT_NAMES:
            assert not is_looser(name, getattr(r_both.resource_limits, name),
                                 getattr(r_single.resource_limits, name)), name
        assert r_both.permissions <= r_single.permissions
    assert r_both.sandbox_type in p.allowed_sandbox_types & q.allowed_sandbox_types


@settings(SETTINGS, max_examples=150)
@given(policies(), policies(), policies(), requests(allow_invalid=False))
def test_chained_intersection_never_loosens(p, q, r, drawn):
    request, _ = drawn
    chained = p.intersect(q).intersect(r)
    result = resolve_or_exception(chained, request)
    event(f"chain {'denied' if isinstance(result, Exception) else 'resolved'}")
    if isinstance(result, Exception):
        return
    for single in (p, q, r):
        assert result.resource_limits.looser_than(single.ceilings) == []
        assert result.permissions <= single.granted_permissions(request["user_id"])
        assert result.sandbox_type in single.allowed_sandbox_types


# -- issue 13: [kernel] allow_output_scripts ------------------------------------------------------
def test_output_scripts_are_off_unless_the_administrator_allows_them(tmp_path) -> None:
    from agenticraft.security.policy import Policy
    from agenticraft.wire.errors import ConfigurationError

    assert Policy().allow_output_scripts is False
    allowed = Policy.from_dict({"kernel": {"allow_output_scripts": True}})
    assert allowed.allow_output_scripts is True
    # an extra policy file can only tighten: it cannot turn scripts on
    assert not Policy().intersect(allowed).allow_output_scripts
    assert not allowed.intersect(Policy()).allow_output_scripts
    for bad in ({"kernel": {"allow_output_scripts": "yes"}}, {"kernel": {"other": 1}}):
        try:
            Policy.from_dict(bad)
        except ConfigurationError:
            continue
        raise AssertionError(bad)
