"""Network allow-lists as ceilings: the administrator's list is the most a user gets, from every
place a user can ask (user_context, config file, environment, %%secure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agenticraft.security.config import load_settings
from agenticraft.security.policy import Policy
from agenticraft.wire.errors import PermissionDenied

POLICY = {"ceilings": {"network_access": ["pypi.org:443", "*.pythonhosted.org:443",
                                          "10.0.0.0/8:5432"]}}


def resolve(request, **kwargs):
    return Policy.from_dict(POLICY, source="policy.toml").resolve(
        {"user_id": "ann", "resource_limits": {"network_access": request}}, **kwargs)


def test_a_narrower_list_is_granted_as_asked():
    ctx = resolve(["files.pythonhosted.org:443", "10.1.2.3:5432"])
    assert ctx.resource_limits.network_access == ("10.1.2.3:5432",
                                                  "files.pythonhosted.org:443")


@pytest.mark.parametrize("request_value,shown", [
    (True, "network_access=True"),
    (["pypi.org:443", "evil.org:443"], "network_access=[evil.org:443, pypi.org:443]"),
    (["pypi.org"], "network_access=[pypi.org]"),
    (["10.0.0.0/7:5432"], "network_access=[10.0.0.0/7:5432]"),
])
def test_anything_wider_is_refused_with_the_ceiling_wording(request_value, shown):
    with pytest.raises(PermissionDenied) as info:
        resolve(request_value)
    text = str(info.value)
    assert text.startswith(f"Permission denied: {shown} is above the administrator's ceiling "
                           "network_access=[")
    assert "(policy.toml). Ask for [" in text
    assert info.value.permission == "network_access"


def test_default_is_no_network_and_true_needs_a_true_ceiling():
    assert resolve(False).resource_limits.network_access is False
    assert Policy().resolve({"user_id": "ann", "resource_limits": {
        "network_access": True}}).resource_limits.network_access is True


def test_two_policies_intersect_their_lists():
    tighter = Policy.from_dict({"ceilings": {"network_access": ["pypi.org:443", "x.org:1"]}})
    both = Policy.from_dict(POLICY).intersect(tighter)
    assert both.ceilings.network_access == ("pypi.org:443",)


def test_config_file_and_environment_take_the_same_form(tmp_path: Path):
    config = tmp_path / "config.py"
    config.write_text('SECURITY_CONFIG = {"default_network_access": ["pypi.org:443"]}\n')
    settings = load_settings(config, env={})
    assert settings.limit_defaults["network_access"] == ("pypi.org:443",)
    env = {"AGENTICRAFT_DEFAULT_NETWORK_ACCESS": "pypi.org:443,evil.org:443"}
    settings = load_settings(config, env=env)
    assert settings.limit_defaults["network_access"] == ("evil.org:443", "pypi.org:443")
    with pytest.raises(PermissionDenied, match=r"evil\.org:443"):
        Policy.from_dict(POLICY).resolve({"user_id": "ann"},
                                         limit_defaults=settings.limit_defaults)


def test_max_network_bytes_ceiling():
    policy = Policy.from_dict({"ceilings": {"max_network_bytes": 1000}})
    assert policy.resolve(None).resource_limits.max_network_bytes == 1000
    with pytest.raises(PermissionDenied, match="max_network_bytes"):
        policy.resolve({"user_id": "a", "resource_limits": {"max_network_bytes": 2000}})

