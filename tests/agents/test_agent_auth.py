"""Authenticators: signed contexts and API keys prove the user_id; every attempt is audited."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from agenticraft import Agent
from agenticraft.agents.auth import APIKeyAuthenticator, AuthenticationError, HMACAuthenticator
from agenticraft.agents.tools.runtime import close_manager
from agenticraft.sandbox import SandboxManager
from agenticraft.security.policy import Policy
from agenticraft.wire.errors import ConfigurationError, PermissionDenied
from agenticraft.workflows import Workflow

from helpers import make_manager

pytestmark = pytest.mark.usefixtures("isolated_agent_state")


SECRET = "0123456789abcdef0123456789abcdef"
POLICY = Policy.from_dict({
    "grants": {"default": ["execute", "execute_workflow", "read_results"],
               "users": {"root-admin": ["admin"]}},
    "api_keys": {APIKeyAuthenticator.digest("key-alice"): "alice"},
    "signing_key": SECRET,
})


@pytest.fixture
def manager(tmp_path) -> Iterator[SandboxManager]:
    m = make_manager(tmp_path, POLICY)
    yield m
    close_manager(m)


def auth_records(manager: SandboxManager) -> list[dict[str, Any]]:
    return manager.audit.query(event_type="authentication")


def test_sign_and_verify_round_trip():
    auth = HMACAuthenticator(SECRET)
    token = auth.sign({"user_id": "alice", "permissions": ["execute"]})
    assert auth.verify(token) == "alice"
    assert auth.claims(token)["permissions"] == ["execute"]
    other = HMACAuthenticator("another-secret-of-16+bytes")
    with pytest.raises(AuthenticationError, match="signature"):
        other.verify(token)
    body, sig = token.split(".")
    forged_body = HMACAuthenticator(SECRET + "x").sign({"user_id": "root-admin"}).split(".")[0]
    with pytest.raises(AuthenticationError, match="signature"):
        auth.verify(f"{forged_body}.{sig}")
    for garbage in ("", "abc", "a.b.c", "é.é", f"{body}.!!!"):
        with pytest.raises(AuthenticationError):
            auth.verify(garbage)


def test_short_secret_and_missing_policy_key_are_refused():
    with pytest.raises(ConfigurationError, match="at least 16"):
        HMACAuthenticator("short")
    with pytest.raises(ConfigurationError, match="signing_key"):
        HMACAuthenticator.from_policy(Policy())
    assert HMACAuthenticator.from_policy(POLICY).verify(
        HMACAuthenticator(SECRET).sign({"user_id": "bob"})) == "bob"


def test_expiry_and_max_age():
    auth = HMACAuthenticator(SECRET)
    expired = auth.sign({"user_id": "alice"}, expires_in=-1)
    with pytest.raises(AuthenticationError, match="expired"):
        auth.verify(expired)
    old = HMACAuthenticator(SECRET, max_age=0.0)
    token = old.sign({"user_id": "alice"})
    time_now = time.time
    try:
        time.time = lambda: time_now() + 5  # type: ignore[assignment]
        with pytest.raises(AuthenticationError, match="max_age"):
            old.verify(token)
    finally:
        time.time = time_now  # type: ignore[assignment]


async def test_signed_context_proves_identity(manager):
    auth = HMACAuthenticator.from_policy(POLICY)
    agent = Agent(sandbox_type="restricted", manager=manager, authenticator=auth)
    token = auth.sign({"user_id": "alice"})
    result = await agent.execute_secure("result = 7", user_context={"token": token})
    assert result["result"] == 7
    assert (await agent.execute_secure("result = 8", user_context=token))["result"] == 8
    ok = auth_records(manager)
    assert [(r["user_id"], r["method"], r["success"]) for r in ok] == \
        [("alice", "hmac", True)] * 2
    assert manager.audit.query(event_type="execution")[-1]["user_id"] == "alice"


@pytest.mark.parametrize(("context", "needle"), [
    (None, "Authentication required"),
    ({"user_id": "root-admin"}, "Authentication required"),
    ({"user_id": "root-admin", "permissions": ["admin"]}, "Authentication required"),
    ("not-a-token", "malformed"),
    ({"api_key": "key-alice"}, "not \\['api_key'\\]"),
])
async def test_unproven_identity_is_refused_and_audited(manager, context, needle):
    agent = Agent(sandbox_type="restricted", manager=manager,
                  authenticator=HMACAuthenticator(SECRET))
    with pytest.raises(AuthenticationError, match=needle):
        await agent.execute_secure("result = 1", user_context=context)
    failure, = auth_records(manager)
    assert failure["success"] is False and failure["method"] == "hmac"
    assert "not-a-token" not in manager.audit.path.read_text()  # credentials are not logged
    assert not manager.audit.query(event_type="execution")


async def test_a_token_for_alice_cannot_act_as_root_admin(manager):
    auth = HMACAuthenticator(SECRET)
    agent = Agent(sandbox_type="restricted", manager=manager, authenticator=auth)
    token = auth.sign({"user_id": "alice"})
    with pytest.raises(AuthenticationError, match="belongs to 'alice'"):
        await agent.execute_secure("result = 1", {"token": token, "user_id": "root-admin"})
    failure, = auth_records(manager)
    assert (failure["user_id"], failure["success"]) == ("root-admin", False)
    # A valid token does not make ungranted permissions granted either.
    with pytest.raises(PermissionDenied, match="asked for admin"):
        await agent.execute_secure("result = 1", {"token": token, "permissions": ["admin"]})
    assert manager.audit.query(event_type="authorization")[-1]["allowed"] is False


async def test_signed_fields_are_a_ceiling(manager):
    auth = HMACAuthenticator(SECRET)
    workflow = Workflow("w", manager=manager, authenticator=auth)
    token = auth.sign({"user_id": "alice", "permissions": ["execute"],
                       "resource_limits": {"memory_mb": 128}})
    with pytest.raises(AuthenticationError, match="beyond what the signed context allows"):
        await workflow.arun("t", {"token": token, "permissions": ["execute_workflow"]})
    agent = Agent(sandbox_type="restricted", manager=manager, authenticator=auth)
    await agent.execute_secure("result = 1", {"token": token,
                                              "resource_limits": {"memory_mb": 1024}})
    assert manager.audit.query(event_type="execution")[-1]["limits"]["memory_mb"] == 128
    # The token's permissions limit the run: no execute_workflow was signed.
    with pytest.raises(PermissionDenied, match="execute_workflow"):
        await workflow.arun("t", {"token": token})


async def test_api_keys_map_to_policy_users(manager):
    auth = APIKeyAuthenticator(POLICY)
    agent = Agent(sandbox_type="restricted", manager=manager, authenticator=auth)
    await agent.execute_secure("result = 1", {"api_key": "key-alice"})
    assert manager.audit.query(event_type="execution")[-1]["user_id"] == "alice"
    with pytest.raises(AuthenticationError, match="unknown API key"):
        await agent.execute_secure("result = 1", {"api_key": "key-mallory"})
    with pytest.raises(AuthenticationError, match="belongs to 'alice'"):
        await agent.execute_secure("result = 1", {"api_key": "key-alice",
                                                  "user_id": "root-admin"})
    assert [(r["user_id"], r["method"], r["success"]) for r in auth_records(manager)] == [
        ("alice", "api_key", True), ("unknown", "api_key", False),
        ("root-admin", "api_key", False)]
    text = manager.audit.path.read_text()
    assert "key-alice" not in text and "key-mallory" not in text  # never logged


async def test_workflow_authenticates_once_per_run(manager):
    auth = HMACAuthenticator(SECRET)
    workflow = Workflow("w", manager=manager, authenticator=auth)
    workflow.add_step("one", tool="calculator", arguments={"expression": "1 + 1"})
    workflow.add_step("two", code="result = previous['one'] + 1")
    result = await workflow.arun("t", {"token": auth.sign({"user_id": "alice"})})
    assert result.output == {"result": 3}
    assert len(auth_records(manager)) == 1
