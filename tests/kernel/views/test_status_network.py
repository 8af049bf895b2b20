"""%secure_status and the panel show an allow-list as the destinations it allows, and the
mechanism that enforces it."""

from __future__ import annotations

from agenticraft.security.policy import Policy
from agenticraft_kernel.views.panel import panel_text
from agenticraft_kernel.views.status import render_status, show_value

ENFORCED = {"network_access": "only 127.0.0.1:8080, pypi.org:443: host-side egress proxy (...)",
            "max_network_bytes": "egress proxy byte count per run"}


def context():
    return Policy().resolve({"user_id": "ann", "resource_limits": {
        "network_access": ["pypi.org:443", "127.0.0.1:8080"], "max_network_bytes": 5000}})


def test_status_shows_the_effective_allow_list_and_its_mechanism():
    text = render_status(context(), ENFORCED, where="the secure kernel")["text/plain"]
    assert "only 127.0.0.1:8080, pypi.org:443" in text
    assert "host-side egress proxy" in text
    assert "5000 bytes" in text


def test_panel_text_shows_the_allow_list():
    assert "network_access only 127.0.0.1:8080, pypi.org:443" in panel_text(context(), ENFORCED,
                                                                            [])


def test_values_read_as_words():
    assert show_value("network_access", True) == "allowed"
    assert show_value("network_access", False) == "off"
    assert show_value("max_network_bytes", None) == "no limit"
