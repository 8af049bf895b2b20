"""Tests of the building blocks of the security layer.

ResourceLimits (defaults, validation, comparison), permission names, SecurityContext as the
specification constructs it, ExecutionResult, SandboxType, the boundary data conversion
(``wire.codec``) and the exceptions and imports the specification documents.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agenticraft.sandbox.result import ExecutionError, ExecutionResult
from agenticraft.sandbox.types import SandboxType
from agenticraft.security import permissions as perms
from agenticraft.security.context import SecurityContext
from agenticraft.wire import codec
from agenticraft.wire.errors import (
    ConfigurationError,
    PermissionDenied,
    ResourceLimitExceeded,
    SandboxUnavailable,
    SecurityException,
)
from agenticraft.wire.limits import (
    BOOLEAN_LIMITS,
    INTEGER_LIMITS,
    LIMIT_NAMES,
    ResourceLimits,
    coerce_limit,
    is_looser,
    strictest,
)

FIVE_PERMISSIONS = {"execute", "execute_workflow", "read_results", "write", "admin"}
NUMERIC_LIMITS = [n for n in LIMIT_NAMES if n not in BOOLEAN_LIMITS]

SPEC_LIMITS = {
    "memory_mb": 512,
    "cpu_percent": 50.0,
    "timeout_seconds": 30,
    "network_access": False,
    "filesystem_access": False,
}


# -- ResourceLimits: defaults -------------------------------------------------------------------

def test_limit_names_are_the_eight_knobs_and_the_network_budget():
    assert set(LIMIT_NAMES) == {
        "memory_mb", "cpu_percent", "timeout_seconds", "max_file_size_mb", "network_access",
        "filesystem_access", "max_output_bytes", "max_processes", "max_network_bytes"}
    assert len(LIMIT_NAMES) == 9
    assert ResourceLimits().max_network_bytes is None  # no budget unless one is asked for
    assert {"network_access", "filesystem_access"} == BOOLEAN_LIMITS


def test_defaults_follow_the_specification():
    limits = ResourceLimits()
    assert limits.memory_mb == 512
    assert limits.cpu_percent == 50.0
    assert limits.timeout_seconds == 30.0
    assert limits.network_access is False
    assert limits.filesystem_access is False


@pytest.mark.parametrize("name", ["max_file_size_mb", "max_output_bytes", "max_processes",
                                  "memory_mb"])
def test_default_integer_limits_are_positive_whole_numbers(name):
    value = getattr(ResourceLimits(), name)
    assert type(value) is int
    assert value > 0


def test_default_other_limits_have_sensible_values():
    limits = ResourceLimits()
    assert limits.max_file_size_mb >= 1
    assert limits.max_output_bytes >= 1024
    assert limits.max_processes >= 1
    assert isinstance(limits.cpu_percent, float)
    assert isinstance(limits.timeout_seconds, float)


def test_limits_are_immutable():
    limits = ResourceLimits()
    with pytest.raises(dataclasses.FrozenInstanceError):
        limits.memory_mb = 1  # type: ignore[misc]
    assert limits.memory_mb == 512


def test_as_dict_has_every_limit():
    data = ResourceLimits().as_dict()
    assert list(data) == list(LIMIT_NAMES)
    assert data["memory_mb"] == 512


# -- ResourceLimits: from_value -----------------------------------------------------------------

def test_from_value_dict_fills_unnamed_limits_with_defaults():
    limits = ResourceLimits.from_value({"memory_mb": 256, "timeout_seconds": 5})
    assert limits.memory_mb == 256
    assert limits.timeout_seconds == 5.0
    assert limits.cpu_percent == 50.0
    assert limits.max_processes == ResourceLimits().max_processes


def test_from_value_spec_dict():
    limits = ResourceLimits.from_value(SPEC_LIMITS)
    assert limits == ResourceLimits()


def test_from_value_uses_base_for_unnamed_limits():
    base = ResourceLimits(memory_mb=128, cpu_percent=10)
    limits = ResourceLimits.from_value({"timeout_seconds": 2}, base=base)
    assert (limits.memory_mb, limits.cpu_percent, limits.timeout_seconds) == (128, 10.0, 2.0)


def test_from_value_limits_instance_is_returned_unchanged():
    limits = ResourceLimits(memory_mb=64)
    assert ResourceLimits.from_value(limits) is limits
    assert ResourceLimits.from_value(limits, base=ResourceLimits(memory_mb=1)).memory_mb == 64


def test_from_value_none_gives_defaults_or_base():
    assert ResourceLimits.from_value(None) == ResourceLimits()
    base = ResourceLimits(memory_mb=100)
    assert ResourceLimits.from_value(None, base=base) == base


@pytest.mark.parametrize("value", [[("memory_mb", 1)], "memory_mb=1", 512])
def test_limits_from_value_rejects_non_mappings(value):
    with pytest.raises(ConfigurationError, match="resource_limits"):
        ResourceLimits.from_value(value)


def test_from_value_unknown_keys_list_the_valid_names():
    with pytest.raises(ConfigurationError) as info:
        ResourceLimits.from_value({"memory_mb": 1, "gpu_count": 2, "memroy_mb": 3})
    message = str(info.value)
    assert "gpu_count" in message
    assert "memroy_mb" in message
    for name in LIMIT_NAMES:
        assert name in message


def test_coerce_limit_unknown_name_lists_valid_names():
    with pytest.raises(ConfigurationError) as info:
        coerce_limit("disk_mb", 1)
    assert "disk_mb" in str(info.value)
    assert all(name in str(info.value) for name in LIMIT_NAMES)


# -- ResourceLimits: validation -----------------------------------------------------------------

BAD_NUMBERS = [0, -1, -0.5, 0.0, float("nan"), float("inf"), float("-inf"), "nan", "inf",
               "lots", "", None, True, False, [1], {"a": 1}, b"1", 1 + 2j]


@pytest.mark.parametrize("name", NUMERIC_LIMITS)
@pytest.mark.parametrize("value", BAD_NUMBERS, ids=repr)
def test_bad_numeric_values_are_rejected_naming_the_limit(name, value):
    if value is None and name == "max_network_bytes":
        return  # None is this limit's "no budget"
    with pytest.raises(ConfigurationError, match=name):
        ResourceLimits(**{name: value})
    with pytest.raises(ConfigurationError, match=name):
        ResourceLimits.from_value({name: value})
    with pytest.raises(ConfigurationError, match=name):
        coerce_limit(name, value)


@pytest.mark.parametrize("name", sorted(INTEGER_LIMITS))
@pytest.mark.parametrize("value", [1.5, 0.1, "2.5", 1e-3])
def test_integer_limits_reject_fractions(name, value):
    with pytest.raises(ConfigurationError, match=name):
        ResourceLimits(**{name: value})


@pytest.mark.parametrize("name", sorted(INTEGER_LIMITS))
def test_integer_limits_accept_whole_floats_and_numeric_strings(name):
    assert getattr(ResourceLimits(**{name: 256.0}), name) == 256
    assert type(getattr(ResourceLimits(**{name: 256.0}), name)) is int
    assert getattr(ResourceLimits(**{name: "64"}), name) == 64
    assert getattr(ResourceLimits(**{name: " 8 "}), name) == 8


@pytest.mark.parametrize("name", ["cpu_percent", "timeout_seconds"])
def test_float_limits_accept_fractions_and_strings(name):
    assert getattr(ResourceLimits(**{name: 0.25}), name) == 0.25
    assert getattr(ResourceLimits(**{name: "1.5"}), name) == 1.5
    assert isinstance(getattr(ResourceLimits(**{name: 2}), name), float)


def test_cpu_percent_may_exceed_one_core_but_is_bounded():
    assert ResourceLimits(cpu_percent=200).cpu_percent == 200.0
    with pytest.raises(ConfigurationError, match="cpu_percent"):
        ResourceLimits(cpu_percent=10**7)


@pytest.mark.parametrize("name", sorted(BOOLEAN_LIMITS))
@pytest.mark.parametrize("text,expected", [
    ("true", True), ("True", True), ("yes", True), ("on", True), ("1", True), (" YES ", True),
    ("false", False), ("FALSE", False), ("no", False), ("off", False), ("0", False),
])
def test_string_booleans(name, text, expected):
    assert getattr(ResourceLimits(**{name: text}), name) is expected
    assert coerce_limit(name, text) is expected


@pytest.mark.parametrize("name", sorted(BOOLEAN_LIMITS))
@pytest.mark.parametrize("value", ["maybe", "", "2", None, 2.5, [True]], ids=repr)
def test_bad_booleans_are_rejected_naming_the_limit(name, value):
    with pytest.raises(ConfigurationError, match=name):
        ResourceLimits(**{name: value})


def test_replace_validates():
    limits = ResourceLimits()
    assert limits.replace(memory_mb=128).memory_mb == 128
    assert limits.memory_mb == 512
    with pytest.raises(ConfigurationError, match="memory_mb"):
        limits.replace(memory_mb=-5)
    with pytest.raises(ConfigurationError, match="bogus"):
        limits.replace(bogus=1)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(NUMERIC_LIMITS),
       st.one_of(st.integers(max_value=0), st.floats(max_value=0.0),
                 st.sampled_from([math.nan, math.inf, -math.inf])))
def test_non_positive_or_non_finite_numbers_always_rejected(name, value):
    with pytest.raises(ConfigurationError, match=name):
        coerce_limit(name, value)


# -- ResourceLimits: comparison -----------------------------------------------------------------

def test_tightened_takes_the_strictest_of_each_limit():
    a = ResourceLimits(memory_mb=100, cpu_percent=80, timeout_seconds=5, network_access=True,
                       filesystem_access=False, max_processes=4)
    b = ResourceLimits(memory_mb=200, cpu_percent=20, timeout_seconds=50, network_access=True,
                       filesystem_access=True, max_processes=8)
    t = a.tightened(b)
    assert t == b.tightened(a)
    assert (t.memory_mb, t.cpu_percent, t.timeout_seconds) == (100, 20.0, 5.0)
    assert t.network_access is True
    assert t.filesystem_access is False
    assert t.max_processes == 4


def test_looser_than_names_the_limits_that_allow_more():
    base = ResourceLimits()
    other = base.replace(memory_mb=1024, network_access=True, timeout_seconds=10)
    assert set(other.looser_than(base)) == {"memory_mb", "network_access"}
    assert set(base.looser_than(other)) == {"timeout_seconds"}
    assert base.looser_than(base) == []


def test_is_looser_and_strictest_for_booleans():
    assert is_looser("network_access", True, False)
    assert not is_looser("network_access", False, False)
    assert not is_looser("network_access", True, True)
    assert not is_looser("network_access", False, True)
    assert strictest("network_access", True, False) is False
    assert strictest("network_access", True, True) is True


def _limits_strategy():
    def value(name):
        if name in BOOLEAN_LIMITS:
            return st.booleans()
        if name in INTEGER_LIMITS:
            return st.integers(1, 100_000)
        return st.floats(0.01, 1000, allow_nan=False)

    return st.fixed_dictionaries({n: value(n) for n in LIMIT_NAMES}).map(
        lambda d: ResourceLimits(**d))


@settings(max_examples=150, deadline=None)
@given(_limits_strategy(), _limits_strategy())
def test_tightened_is_never_looser_than_either(a, b):
    t = a.tightened(b)
    assert t.looser_than(a) == []
    assert t.looser_than(b) == []
    assert t == b.tightened(a)
    # and it is the loosest such: each limit equals one of the two
    for name in LIMIT_NAMES:
        assert getattr(t, name) in (getattr(a, name), getattr(b, name))


# -- permissions --------------------------------------------------------------------------------

def test_the_five_permissions():
    assert set(perms.ALL_PERMISSIONS) == FIVE_PERMISSIONS
    assert len(perms.ALL_PERMISSIONS) == 5


@pytest.mark.parametrize("name", sorted(FIVE_PERMISSIONS))
def test_each_permission_normalizes_to_itself(name):
    assert perms.normalize(name) == name
    assert perms.normalize(name.upper()) == name


def test_read_is_an_alias_of_read_results():
    assert perms.normalize("read") == "read_results"
    assert perms.normalize_all(["read", "read_results"]) == frozenset({"read_results"})


@pytest.mark.parametrize("name", ["delete", "root", "exec", "", "read results"])
def test_unknown_permission_lists_the_valid_ones(name):
    with pytest.raises(ConfigurationError) as info:
        perms.normalize(name)
    message = str(info.value)
    assert repr(name) in message
    for valid in FIVE_PERMISSIONS:
        assert valid in message


@pytest.mark.parametrize("value", [None, 5, ["execute"]])
def test_non_string_permission_rejected(value):
    with pytest.raises(ConfigurationError):
        perms.normalize(value)


def test_normalize_all_forms():
    assert perms.normalize_all(None) == frozenset()
    assert perms.normalize_all("execute") == frozenset({"execute"})
    assert perms.normalize_all(("write", "read")) == frozenset({"write", "read_results"})
    with pytest.raises(ConfigurationError, match="sudo"):
        perms.normalize_all(["execute", "sudo"])


def test_admin_implies_all():
    assert perms.implied(frozenset({"admin"})) == frozenset(FIVE_PERMISSIONS)
    assert perms.implied(frozenset({"write"})) == frozenset({"write"})
    assert perms.implied(frozenset()) == frozenset()


# -- SecurityContext ----------------------------------------------------------------------------

def spec_context():
    return SecurityContext(
        user_id="user@example.com",
        permissions=["execute", "read", "write"],
        resource_limits={
            "memory_mb": 512,
            "cpu_percent": 50.0,
            "timeout_seconds": 30,
            "network_access": False,
            "filesystem_access": False,
        },
    )


def test_spec_context_construction():
    ctx = spec_context()
    assert ctx.user_id == "user@example.com"
    assert ctx.permissions == frozenset({"execute", "read_results", "write"})
    limits = ctx.resource_limits
    assert isinstance(limits, ResourceLimits)
    assert (limits.memory_mb, limits.cpu_percent, limits.timeout_seconds) == (512, 50.0, 30.0)
    assert limits.network_access is False
    assert limits.filesystem_access is False
    assert ctx.resolved is False


def test_spec_context_has_permission():
    ctx = spec_context()
    for held in ("execute", "read", "read_results", "write", "WRITE"):
        assert ctx.has_permission(held), held
    for missing in ("admin", "execute_workflow"):
        assert not ctx.has_permission(missing), missing


def test_has_permission_unknown_name_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="teleport"):
        spec_context().has_permission("teleport")


def test_require_passes_for_held_permission():
    ctx = spec_context()
    assert ctx.require("execute") is None
    assert ctx.require("read") is None


@pytest.mark.parametrize("missing", ["admin", "execute_workflow"])
def test_require_raises_permission_denied_naming_permission_and_remedy(missing):
    ctx = spec_context()
    with pytest.raises(PermissionDenied) as info:
        ctx.require(missing)
    exc = info.value
    assert isinstance(exc, SecurityException)
    assert exc.permission == missing
    assert exc.user_id == "user@example.com"
    message = str(exc)
    assert missing in message
    assert "user@example.com" in message
    assert "administrator" in message.lower()
    assert "grant" in message.lower()


def test_custom_user_context_has_execute_only():
    ctx = SecurityContext(user_id="custom")
    assert ctx.has_permission("execute")
    assert ctx.permissions == frozenset({"execute"})
    assert ctx.requested_permissions is None
    assert ctx.resource_limits == ResourceLimits()
    assert ctx.limit_request == {}
    with pytest.raises(PermissionDenied):
        ctx.require("write")


def test_admin_context_holds_everything():
    ctx = SecurityContext("root", ["admin"])
    assert ctx.permissions == frozenset(FIVE_PERMISSIONS)
    for name in FIVE_PERMISSIONS:
        ctx.require(name)


def test_empty_permission_list_holds_nothing():
    ctx = SecurityContext("nobody", [])
    assert ctx.permissions == frozenset()
    assert not ctx.has_permission("execute")
    with pytest.raises(PermissionDenied, match="execute"):
        ctx.require("execute")


def test_limit_request_records_only_named_limits():
    ctx = SecurityContext("u", resource_limits={"memory_mb": "128", "network_access": "no"})
    assert ctx.limit_request == {"memory_mb": 128, "network_access": False}
    full = SecurityContext("u", resource_limits=ResourceLimits(memory_mb=64))
    assert set(full.limit_request) == set(LIMIT_NAMES)
    assert full.limit_request["memory_mb"] == 64


@pytest.mark.parametrize("user_id", ["", "   ", "\n\t", None, 5, ["alice"]], ids=repr)
def test_empty_or_non_string_user_id_rejected(user_id):
    with pytest.raises(ConfigurationError, match="user_id"):
        SecurityContext(user_id=user_id)


def test_context_rejects_unknown_permission_and_limit():
    with pytest.raises(ConfigurationError, match="superuser"):
        SecurityContext("u", ["execute", "superuser"])
    with pytest.raises(ConfigurationError, match="disk_gb"):
        SecurityContext("u", resource_limits={"disk_gb": 1})
    with pytest.raises(ConfigurationError, match="memory_mb"):
        SecurityContext("u", resource_limits={"memory_mb": 0})


def test_from_value_with_the_spec_user_context_dict():
    user_context = {
        "user_id": "alice@company.com",
        "permissions": ["execute_workflow", "read_results"],
        "resource_limits": {"memory_mb": 512, "timeout_seconds": 60},
    }
    ctx = SecurityContext.from_value(user_context)
    assert ctx.user_id == "alice@company.com"
    assert ctx.permissions == frozenset({"execute_workflow", "read_results"})
    assert ctx.resource_limits.memory_mb == 512
    assert ctx.resource_limits.timeout_seconds == 60.0
    assert ctx.limit_request == {"memory_mb": 512, "timeout_seconds": 60.0}
    assert not ctx.has_permission("execute")
    assert ctx.resolved is False


def test_from_value_minimal_dict_and_defaults():
    assert SecurityContext.from_value({"user_id": "alice"}).permissions == {"execute"}
    assert SecurityContext.from_value({}).user_id == "anonymous"
    assert SecurityContext.from_value({}, default_user="bob").user_id == "bob"
    assert SecurityContext.from_value(None).user_id == "anonymous"
    assert SecurityContext.from_value(None, default_user="carol").user_id == "carol"
    ctx = spec_context()
    assert SecurityContext.from_value(ctx) is ctx


@pytest.mark.parametrize("key", ["role", "is_admin", "_resolved", "resolved", "limits"])
def test_from_value_rejects_unknown_keys(key):
    with pytest.raises(ConfigurationError) as info:
        SecurityContext.from_value({"user_id": "alice", key: True})
    assert key in str(info.value)
    assert "user_id" in str(info.value)  # lists the valid keys


@pytest.mark.parametrize("value", ["alice", 5, ["user_id", "alice"]])
def test_context_from_value_rejects_non_mappings(value):
    with pytest.raises(ConfigurationError, match="user_context"):
        SecurityContext.from_value(value)


def test_from_value_empty_user_id_rejected():
    with pytest.raises(ConfigurationError, match="user_id"):
        SecurityContext.from_value({"user_id": ""})


def test_to_dict_and_repr():
    ctx = spec_context()
    data = ctx.to_dict()
    assert data["user_id"] == "user@example.com"
    assert data["permissions"] == ["execute", "read_results", "write"]
    assert data["resource_limits"]["memory_mb"] == 512
    json.dumps(data)
    assert "user@example.com" in repr(ctx)


# -- ExecutionResult ----------------------------------------------------------------------------

def test_execution_result_str_is_the_spec_json(capsys):
    result = ExecutionResult({"result": 15})
    assert str(result) == '{"result": 15}'
    print(result)
    assert capsys.readouterr().out == '{"result": 15}\n'


def test_execution_result_is_a_read_only_mapping():
    source = {"result": 15, "x": [1, 2]}
    result = ExecutionResult(source)
    assert isinstance(result, Mapping)
    assert result["result"] == 15
    assert dict(result) == {"result": 15, "x": [1, 2]}
    assert len(result) == 2
    assert "x" in result
    assert result.get("missing") is None
    with pytest.raises(TypeError):
        result["result"] = 16  # type: ignore[index]
    with pytest.raises(TypeError):
        del result["result"]  # type: ignore[attr-defined]
    assert not hasattr(result, "update")
    source["result"] = 99  # the caller's dict is copied
    assert result["result"] == 15
    copy = result.values_dict
    copy["result"] = 0
    assert result["result"] == 15
    with pytest.raises(KeyError):
        result["nope"]


def test_execution_result_attributes_and_defaults():
    result = ExecutionResult({"result": 15})
    assert result.success is True
    assert result.error is None
    assert result.stdout == ""
    assert result.stderr == ""
    assert {"memory_mb", "cpu_seconds"} <= set(result.resource_usage)
    assert result.resource_usage["memory_mb"] == 0.0
    assert result.execution_time_ms == 0.0
    assert result.sandbox_type == ""
    assert result.enforced == {}


def test_execution_result_with_values():
    error = ExecutionError("ZeroDivisionError", "division by zero", "Traceback ...")
    result = ExecutionResult(
        {}, success=False, error=error, stdout="hi\n", stderr="warn\n",
        resource_usage={"memory_mb": 12.5}, execution_time_ms=3.25, sandbox_type="process",
        enforced={"memory_mb": "rlimit"})
    assert result.success is False
    assert str(result.error) == "ZeroDivisionError: division by zero"
    assert result.stdout == "hi\n"
    assert result.stderr == "warn\n"
    assert result.resource_usage["memory_mb"] == 12.5
    assert result.resource_usage["cpu_seconds"] == 0.0
    assert result.execution_time_ms == 3.25
    assert result.sandbox_type == "process"
    assert result.enforced == {"memory_mb": "rlimit"}
    assert str(result) == "{}"
    assert "ZeroDivisionError" in repr(result)
    data = result.to_dict()
    assert data["error"]["ename"] == "ZeroDivisionError"
    json.dumps(data)


def test_execution_error_str_without_value():
    assert str(ExecutionError("KeyboardInterrupt", "")) == "KeyboardInterrupt"


# -- SandboxType --------------------------------------------------------------------------------

def test_sandbox_type_values():
    assert {t.value for t in SandboxType} == {"restricted", "process", "container"}
    assert SandboxType.PROCESS == "process"
    assert SandboxType.RESTRICTED == "restricted"
    assert str(SandboxType.PROCESS) == "process"
    assert f"{SandboxType.RESTRICTED}" == "restricted"


@pytest.mark.parametrize("text,expected", [
    ("process", SandboxType.PROCESS), ("PROCESS", SandboxType.PROCESS),
    (" restricted ", SandboxType.RESTRICTED), (SandboxType.RESTRICTED, SandboxType.RESTRICTED),
])
def test_sandbox_type_parse(text, expected):
    assert SandboxType.parse(text) is expected


@pytest.mark.parametrize("text", ["vm", "", "proc", None, 3])
def test_sandbox_type_parse_errors_list_valid_types(text):
    with pytest.raises(ConfigurationError) as info:
        SandboxType.parse(text)
    message = str(info.value)
    assert "process" in message
    assert "restricted" in message


def test_docker_is_an_alias_of_container():
    assert SandboxType.parse("docker") is SandboxType.CONTAINER
    assert SandboxType.parse(" Container ") is SandboxType.CONTAINER


# -- codec --------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [
    None, True, False, 0, -7, 2**63 - 1, 1.5, -0.0, "text", "", [], {}, [1, "a", None],
    {"a": {"b": [1, 2.5, {"c": None}]}},
])
def test_json_values_pass_unchanged(value):
    out = codec.to_safe(value)
    assert out == value
    assert type(out) is type(value)
    json.dumps(out, allow_nan=False)


def test_tuples_become_lists():
    assert codec.to_safe((1, (2, 3))) == [1, [2, 3]]
    assert type(codec.to_safe((1,))) is list
    assert codec.to_safe({"t": (1, 2)}) == {"t": [1, 2]}


class _Thing:
    def __repr__(self):
        return "<thing>"


@pytest.mark.parametrize("value,expected", [
    ({1, 2}, repr({1, 2})), (b"ab", "b'ab'"), (_Thing(), "<thing>"), ({1: "a"}, "{1: 'a'}"),
    (2**63, str(2**63)), (-(2**64), str(-(2**64))), (10**30, str(10**30)), (3 + 4j, "(3+4j)"),
])
def test_non_json_values_become_repr(value, expected):
    assert codec.to_safe(value) == expected


def test_non_finite_floats_become_repr():
    assert codec.to_safe(float("nan")) == "nan"
    assert codec.to_safe(float("inf")) == "inf"
    assert codec.to_safe([float("-inf")]) == ["-inf"]
    json.dumps(codec.to_safe({"x": float("nan")}), allow_nan=False)


def test_subclasses_of_json_types_are_not_trusted():
    class Sneaky(str):
        def __repr__(self):
            return "sneaky"

    class MyList(list):
        pass

    assert codec.to_safe(Sneaky("x")) == "sneaky"
    assert type(codec.to_safe(Sneaky("x"))) is str
    assert codec.to_safe(MyList([1])) == "[1]"


def test_huge_int_that_cannot_be_printed_becomes_a_string():
    out = codec.to_safe(10**5000)
    assert isinstance(out, str)
    assert len(out) <= codec.REPR_LIMIT + len("...[truncated]")
    json.dumps(out)


def test_long_repr_is_truncated():
    out = codec.to_safe(_Long())
    assert out.endswith("...[truncated]")
    assert len(out) == codec.REPR_LIMIT + len("...[truncated]")


class _Long:
    def __repr__(self):
        return "x" * 100_000


def _list_depth(value):
    depth = 0
    while isinstance(value, list):
        assert len(value) <= 1
        if not value:
            break
        value = value[0]
        depth += 1
    return depth, value


def test_deep_nesting_is_bounded():
    nested: list = []
    for _ in range(100):
        nested = [nested]
    out = codec.to_safe(nested)
    depth, inner = _list_depth(out)
    assert depth == codec.MAX_DEPTH
    assert isinstance(inner, str)
    json.dumps(out)


def test_very_deep_nesting_does_not_blow_up():
    nested: list = []
    for _ in range(100_000):
        nested = [nested]
    out = codec.to_safe(nested)
    depth, inner = _list_depth(out)
    assert depth <= codec.MAX_DEPTH
    assert isinstance(inner, str)
    json.dumps(out)


class _Hostile:
    def __repr__(self):
        raise RuntimeError("no repr for you")


class _HostileExit:
    def __repr__(self):
        raise SystemExit(3)


class _Interrupted:
    def __repr__(self):
        raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("cls", "exc"), [(_HostileExit, SystemExit), (_Interrupted, KeyboardInterrupt)])
def test_codec_does_not_swallow_exits_and_interrupts(cls, exc):
    """An interrupt (or exit) in flight while a value is encoded must not be discarded
    (issue 14: the codec catches Exception, not BaseException)."""
    with pytest.raises(exc):
        codec.to_safe([cls()])


class _NotAString:
    def __repr__(self):
        return 42  # type: ignore[return-value]


@pytest.mark.parametrize("cls", [_Hostile, _NotAString])
def test_hostile_repr_gives_a_placeholder(cls):
    out = codec.to_safe(cls())
    assert isinstance(out, str)
    assert cls.__name__ in out
    assert codec.to_safe([cls()]) == [out]
    assert codec.to_safe({"k": cls()}) == {"k": out}


def test_dict_with_hostile_key_gives_placeholder():
    out = codec.to_safe({_Hostile(): 1})
    assert isinstance(out, str)
    assert "dict" in out


_json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary()
    | st.complex_numbers(),
    lambda children: st.lists(children) | st.tuples(children, children)
    | st.dictionaries(st.text(), children) | st.dictionaries(st.integers(), children)
    | st.frozensets(st.integers()),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(_json_like)
def test_to_safe_output_is_always_strict_json(value):
    out = codec.to_safe(value)
    text = json.dumps(out, allow_nan=False)
    assert json.loads(text) == out


def test_is_plain_name():
    assert codec.is_plain_name("result", 15)
    assert codec.is_plain_name("data", [1, 2])
    assert codec.is_plain_name("obj", _Thing())
    assert not codec.is_plain_name("_private", 1)
    assert not codec.is_plain_name("__builtins__", {})
    assert not codec.is_plain_name("json", json)
    assert not codec.is_plain_name("f", lambda: 1)
    assert not codec.is_plain_name("length", len)
    assert not codec.is_plain_name("cls", _Thing)
    assert not codec.is_plain_name("m", _Thing().__repr__)
    assert not codec.is_plain_name("mod", types.ModuleType("x"))


# -- exceptions and the specification's imports -------------------------------------------------

def test_spec_imports_work():
    from agenticraft.sandbox import SandboxManager as RealManager
    from agenticraft.sandbox import SandboxType as RealType
    from agenticraft.security import SandboxManager, SandboxType, SecurityContext
    from agenticraft.wire.errors import (  # noqa: F401
        PermissionDenied,
        ResourceLimitExceeded,
        SecurityException,
    )

    assert SandboxManager is RealManager
    assert SandboxType is RealType
    assert SecurityContext(user_id="custom").has_permission("execute")


def test_unknown_security_attribute_is_an_import_error():
    with pytest.raises(ImportError):
        from agenticraft.security import Nonexistent  # noqa: F401


def test_exception_hierarchy():
    assert issubclass(PermissionDenied, SecurityException)
    assert issubclass(ResourceLimitExceeded, SecurityException)
    assert issubclass(SandboxUnavailable, SecurityException)
    assert issubclass(ConfigurationError, SecurityException)
    assert issubclass(ConfigurationError, ValueError)
    assert issubclass(SecurityException, Exception)
    assert not issubclass(ResourceLimitExceeded, PermissionDenied)


def test_resource_limit_exceeded_carries_limit_value_allowed():
    exc = ResourceLimitExceeded("memory_mb", 700, 512)
    assert isinstance(exc, SecurityException)
    assert (exc.limit, exc.value, exc.allowed) == ("memory_mb", 700, 512)
    assert exc.rolled_back is False
    message = str(exc)
    assert "memory_mb" in message
    assert "512" in message
    assert "700" in message
    assert "rolled back" not in message


def test_resource_limit_exceeded_message_forms():
    assert "timeout_seconds" in str(ResourceLimitExceeded("timeout_seconds"))
    custom = ResourceLimitExceeded("recursion", message="too deep")
    assert str(custom) == "too deep"
    rolled = ResourceLimitExceeded("memory_mb", 700, 512, rolled_back=True)
    assert rolled.rolled_back is True
    assert "rolled back" in str(rolled)
    with pytest.raises(SecurityException):
        raise ResourceLimitExceeded("max_output_bytes", 2_000_000, 1_000_000)


def test_sandbox_unavailable_message():
    exc = SandboxUnavailable("process")
    assert str(exc).startswith("Sandbox not available")
    assert "process" in str(exc)
    detailed = SandboxUnavailable("process", ["seccomp", "landlock"], "Try 'restricted'.")
    message = str(detailed)
    assert message.startswith("Sandbox not available")
    assert "seccomp" in message
    assert "landlock" in message
    assert message.endswith("Try 'restricted'.")
    assert detailed.missing == ["seccomp", "landlock"]
    assert detailed.sandbox_type == "process"


def test_permission_denied_attributes():
    exc = PermissionDenied("nope", permission="write", user_id="bob", ceiling=3)
    assert (exc.permission, exc.user_id, exc.ceiling) == ("write", "bob", 3)
    assert str(exc) == "nope"


def test_strict_side_refuses_what_to_safe_would_repr():
    assert codec.literal({"t": (1,), "l": [None, True, 1.5, "s"]}) == \
        "{'t': (1,), 'l': [None, True, 1.5, 's']}"
    assert codec.to_plain({"t": (1, 2)}) == {"t": [1, 2]}
    for value, why in [({1, 2}, "a set cannot cross"), (2**63, "too large"),
                       (math.inf, "not a finite number"), ({1: "a"}, "keys must be str, not int"),
                       ([[[]]], None)]:
        if why is None:
            assert codec.to_plain(value) == value
            continue
        with pytest.raises(codec.NotPlain, match=why):
            codec.to_plain(value)
    nested: list = []
    for _ in range(codec.MAX_DEPTH + 1):
        nested = [nested]
    with pytest.raises(codec.NotPlain, match="levels deep"):
        codec.to_plain(nested)


def test_coerce_accepts_subclasses_as_their_base_type():
    class Flag(int):
        pass

    class Name(str):
        def __str__(self):
            return "hostile"

    out = codec.to_plain({Name("k"): [Flag(3), Name("v")], "t": (1,)}, coerce=True)
    assert out == {"k": [3, "v"], "t": [1]}
    assert [type(v) for v in out["k"]] == [int, str]
    with pytest.raises(codec.NotPlain):
        codec.to_plain([Flag(3)])
