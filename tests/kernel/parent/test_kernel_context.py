"""The kernel's request from its traitlets: limits written as everywhere else."""

from __future__ import annotations

from agenticraft_kernel.parent.kernel_context import build_request


def test_traitlets_take_network_allow_lists_in_the_common_form():
    request = build_request(user_id="ann", sandbox_type=None,
                            limits={"network_access": ["PyPI.org:443"],
                                    "max_network_bytes": "10000"}, env={})
    assert request.limit_overrides == {"network_access": ("pypi.org:443",),
                                       "max_network_bytes": 10000}
