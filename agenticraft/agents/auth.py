"""Who is calling: optional authenticators that turn a credential into a verified ``user_id``.

A ``user_context`` dict is a *request*: it names a user and may ask for permissions and limits,
but ``Policy.resolve`` decides what that user actually gets. Without an authenticator the
``user_id`` is taken as given (fine for a single-user script or notebook, where the caller is
the machine's owner). When several people or services call one agent, configure an
authenticator so that the ``user_id`` itself is proven:

* :class:`HMACAuthenticator` - contexts signed with a shared secret (the policy's
  ``signing_key``): ``token = auth.sign({"user_id": "alice", "permissions": ["execute"]})``,
  then pass ``user_context={"token": token}`` (or the token string itself). The signed fields
  are a ceiling: the caller may narrow them in the same dict, never widen them.
* :class:`APIKeyAuthenticator` - API keys mapped to users in the policy file (``[api_keys]``
  maps the SHA-256 of a key to a user): ``user_context={"api_key": "..."}``.

Every attempt, accepted or refused, is an ``authentication`` audit record (``user_id``,
``method``, ``success``); credentials themselves are never written to the log.
"""

from __future__ import annotations

import abc
import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from agenticraft.security import permissions as perms
from agenticraft.security import records
from agenticraft.security.context import SecurityContext
from agenticraft.security.policy import Policy
from agenticraft.wire.errors import ConfigurationError, PermissionDenied
from agenticraft.wire.limits import LIMIT_NAMES, coerce_limit, strictest

__all__ = ["CREDENTIAL_KEYS", "APIKeyAuthenticator", "AuthenticationError", "Authenticator",
           "HMACAuthenticator"]

#: Keys of a ``user_context`` dict that carry credentials (consumed by an authenticator).
CREDENTIAL_KEYS = frozenset({"token", "api_key"})
_REQUEST_KEYS = frozenset({"user_id", "permissions", "resource_limits", "sandbox_type",
                           "working_dir", "groups", "image"})
MIN_SECRET_BYTES = 16


class AuthenticationError(PermissionDenied):
    """The caller's identity could not be verified (bad, expired or missing credential)."""

    def __init__(self, message: str, *, user_id: str | None = None) -> None:
        super().__init__(message, permission="authentication", user_id=user_id)


class Authenticator(abc.ABC):
    """Verifies the identity behind a ``user_context`` and returns the request to resolve."""

    method: ClassVar[str] = "unknown"
    credential_key: ClassVar[str] = "token"

    def authenticate(self, user_context: Any, audit: Any) -> SecurityContext:
        """The verified request (an unresolved ``SecurityContext``); audits the attempt.

        Raises :class:`AuthenticationError` (a ``PermissionDenied``) when verification fails.
        """
        claimed = _claimed_user(user_context)
        try:
            request = self._authenticate(user_context)
        except AuthenticationError as exc:
            audit.record(records.authentication(claimed or "unknown", self.method, False,
                                                reason=str(exc)))
            raise
        except ConfigurationError as exc:
            audit.record(records.authentication(claimed or "unknown", self.method, False,
                                                reason=str(exc)))
            raise AuthenticationError(f"Authentication failed: {exc}", user_id=claimed) from None
        audit.record(records.authentication(request.user_id, self.method, True))
        return request

    @abc.abstractmethod
    def _authenticate(self, user_context: Any) -> SecurityContext:
        """Verify and return the request; raise AuthenticationError."""

    # -- shared parsing ---------------------------------------------------------------------
    def _split(self, user_context: Any) -> tuple[str, dict[str, Any]]:
        """(credential, the other request fields) from a credential string or a dict."""
        if isinstance(user_context, str):
            return user_context, {}
        if isinstance(user_context, Mapping):
            fields = dict(user_context)
            credential = fields.pop(self.credential_key, None)
            others = sorted(set(fields) & (CREDENTIAL_KEYS - {self.credential_key}))
            if others:
                raise AuthenticationError(
                    f"Authentication failed: this agent verifies {self.method} credentials "
                    f"(user_context[{self.credential_key!r}]), not {others}.",
                    user_id=_claimed_user(user_context))
            unknown = sorted(set(fields) - _REQUEST_KEYS)
            if unknown:
                raise ConfigurationError(
                    f"Unknown user_context key(s) {unknown}; valid keys are: "
                    f"{sorted(_REQUEST_KEYS | {self.credential_key})}")
            if isinstance(credential, str) and credential:
                return credential, fields
        raise AuthenticationError(
            f"Authentication required: pass user_context={{{self.credential_key!r}: ...}} "
            f"({self.method}); a user_context without a credential is not accepted by this "
            "agent.", user_id=_claimed_user(user_context))


class HMACAuthenticator(Authenticator):
    """Contexts signed with HMAC-SHA256 under a shared secret.

    ``sign(context)`` returns a token ``<payload>.<signature>`` (both base64url); ``verify``
    returns the ``user_id`` of a valid token. ``max_age`` (seconds) bounds every token's life,
    ``sign(..., expires_in=)`` one token's.
    """

    method = "hmac"
    credential_key = "token"

    def __init__(self, secret: str | bytes, *, max_age: float | None = None) -> None:
        key = secret.encode() if isinstance(secret, str) else bytes(secret)
        if len(key) < MIN_SECRET_BYTES:
            raise ConfigurationError(
                f"The HMAC signing secret must be at least {MIN_SECRET_BYTES} bytes long "
                "(use secrets.token_hex(32)).")
        self._key = key
        self.max_age = max_age

    @classmethod
    def from_policy(cls, policy: Policy, **kwargs: Any) -> HMACAuthenticator:
        """Use the policy file's ``signing_key``."""
        if not policy.signing_key:
            raise ConfigurationError(
                f"The policy ({policy.source_text()}) has no signing_key; add "
                "signing_key = \"...\" to the policy file or pass a secret.")
        return cls(policy.signing_key, **kwargs)

    def sign(self, context: SecurityContext | Mapping[str, Any], *,
             expires_in: float | None = None) -> str:
        """A token proving ``context`` (its user, and the permissions/limits it may request)."""
        request = SecurityContext.from_value(context)
        payload: dict[str, Any] = {"user_id": request.user_id, "iat": int(time.time())}
        if request.requested_permissions is not None:
            payload["permissions"] = sorted(request.requested_permissions)
        if request.limit_request:
            payload["resource_limits"] = dict(request.limit_request)
        if expires_in is not None:
            payload["exp"] = time.time() + float(expires_in)
        body = _b64(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode())
        return f"{body}.{_b64(self._mac(body))}"

    def claims(self, token: str) -> dict[str, Any]:
        """The verified payload of ``token``; raises AuthenticationError."""
        if not isinstance(token, str) or not token.isascii() or token.count(".") != 1:
            raise AuthenticationError("Authentication failed: malformed token.")
        body, signature = token.split(".")
        try:
            given = _unb64(signature)
        except (binascii.Error, ValueError):
            raise AuthenticationError("Authentication failed: malformed token.") from None
        if not hmac.compare_digest(given, self._mac(body)):
            raise AuthenticationError("Authentication failed: the token's signature is invalid "
                                      "(forged, altered, or signed with another key).")
        try:
            payload = json.loads(_unb64(body))
        except (binascii.Error, ValueError):
            raise AuthenticationError("Authentication failed: malformed token.") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("user_id"), str):
            raise AuthenticationError("Authentication failed: the token names no user.")
        now = time.time()
        if isinstance(payload.get("exp"), int | float) and now > payload["exp"]:
            raise AuthenticationError("Authentication failed: the token has expired; sign a new "
                                      "one.", user_id=payload["user_id"])
        if (self.max_age is not None and isinstance(payload.get("iat"), int | float)
                and now - payload["iat"] > self.max_age):
            raise AuthenticationError(
                f"Authentication failed: the token is older than max_age={self.max_age} s.",
                user_id=payload["user_id"])
        return payload

    def verify(self, token: str) -> str:
        """The ``user_id`` of a valid token; raises AuthenticationError."""
        return self.claims(token)["user_id"]

    def _mac(self, body: str) -> bytes:
        return hmac.new(self._key, body.encode("ascii"), hashlib.sha256).digest()

    def _authenticate(self, user_context: Any) -> SecurityContext:
        token, fields = self._split(user_context)
        claims = self.claims(token)
        user = claims["user_id"]
        _check_same_user(fields, user)
        signed_perms = claims.get("permissions")
        asked_perms = fields.get("permissions")
        if signed_perms is not None and asked_perms is not None:
            extra = sorted(perms.implied(perms.normalize_all(asked_perms))
                           - perms.implied(perms.normalize_all(signed_perms)))
            if extra:
                raise AuthenticationError(
                    f"Authentication failed: user_context asks for {extra}, beyond what the "
                    "signed context allows.", user_id=user)
        permissions = asked_perms if asked_perms is not None else signed_perms
        limits = _tightest(claims.get("resource_limits") or {}, fields.get("resource_limits"))
        return SecurityContext(user, permissions, limits,
                               sandbox_type=fields.get("sandbox_type"),
                               working_dir=fields.get("working_dir"), image=fields.get("image"))


class APIKeyAuthenticator(Authenticator):
    """API keys mapped to users by the policy (``[api_keys]``: SHA-256 hex of key -> user)."""

    method = "api_key"
    credential_key = "api_key"

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    @staticmethod
    def digest(api_key: str) -> str:
        """What to write in the policy file's ``[api_keys]`` table for ``api_key``."""
        return hashlib.sha256(api_key.encode()).hexdigest()

    def verify(self, api_key: str) -> str:
        user = self.policy.user_for_api_key(api_key) if isinstance(api_key, str) else None
        if user is None:
            raise AuthenticationError("Authentication failed: unknown API key.")
        return user

    def _authenticate(self, user_context: Any) -> SecurityContext:
        key, fields = self._split(user_context)
        user = self.verify(key)
        _check_same_user(fields, user)
        fields.pop("groups", None)  # group membership comes from the policy, never the caller
        fields["user_id"] = user
        return SecurityContext.from_value(fields)


def _claimed_user(user_context: Any) -> str | None:
    if isinstance(user_context, SecurityContext):
        return user_context.user_id
    if isinstance(user_context, Mapping) and isinstance(user_context.get("user_id"), str):
        return user_context["user_id"]
    return None


def _check_same_user(fields: Mapping[str, Any], user: str) -> None:
    claimed = fields.get("user_id")
    if claimed is not None and claimed != user:
        raise AuthenticationError(
            f"Authentication failed: user_context says user_id={claimed!r} but the credential "
            f"belongs to {user!r}.", user_id=str(claimed))


def _tightest(signed: Mapping[str, Any], asked: Any) -> dict[str, Any]:
    """Signed limits are a ceiling the caller may only tighten."""
    if asked is not None and not isinstance(asked, Mapping):
        raise ConfigurationError("resource_limits must be a dict")
    merged = {k: coerce_limit(k, v) for k, v in signed.items()}
    for name, value in (asked or {}).items():
        value = coerce_limit(name, value)
        merged[name] = strictest(name, merged[name], value) if name in merged else value
    return {k: merged[k] for k in LIMIT_NAMES if k in merged}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
