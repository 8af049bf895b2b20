"""network_access values: one parser for every place they are written, and list comparison."""

from __future__ import annotations

import ipaddress

import pytest

from agenticraft.wire import network
from agenticraft.wire.errors import ConfigurationError
from agenticraft.wire.limits import ResourceLimits, coerce_limit, is_looser, strictest


@pytest.mark.parametrize("value,expected", [
    (["pypi.org:443"], ("pypi.org:443",)),
    ("PyPI.org.:443, files.pythonhosted.org:443",
     ("files.pythonhosted.org:443", "pypi.org:443")),
    (["*.Example.org:443"], ("*.example.org:443",)),
    (["localhost"], ("localhost",)),
    (["db:5432"], ("db:5432",)),
    (["10.1.2.3/8:5432"], ("10.0.0.0/8:5432",)),
    (["[::1]:8080", "::1"], ("[::1]", "[::1]:8080")),
    (["[2001:DB8::/32]"], ("[2001:db8::/32]",)),
    (["[::ffff:127.0.0.1]:80"], ("127.0.0.1:80",)),
    (["bücher.example:443"], ("xn--bcher-kva.example:443",)),
    ([], False), ("off", False), ("true", True), (True, True),
])
def test_accepted_forms_normalise(value, expected):
    assert network.coerce(value) == expected
    assert ResourceLimits(network_access=value).network_access == expected


@pytest.mark.parametrize("value", [
    "", "maybe", "2", "0x7f000001:80", "127.1", "*x.org", "a.*.org", "a..b:1", "host:0",
    "host:65536", "host:http", "[::1", "[::1]x", "10.0.0.0/33", "-bad-.org", 3, None, [1],
    ["ok.org", None]])
def test_bad_forms_name_network_access(value):
    with pytest.raises(ConfigurationError, match="network_access"):
        coerce_limit("network_access", value)


@pytest.mark.parametrize("spelling", ["127.0.0.1", "2130706433", "0x7f000001", "0177.0.0.1",
                                      "127.1", "0x7f.1", "[::ffff:127.0.0.1]",
                                      "::ffff:7f00:1"])
def test_every_spelling_of_an_address_is_that_address(spelling):
    assert network.parse_address(spelling) == ipaddress.ip_address("127.0.0.1")


@pytest.mark.parametrize("name", ["example.org", "cafe", "dead.beef", "localhost", "x1"])
def test_names_are_not_addresses(name):
    assert network.parse_address(name) is None


LIST = ("*.example.org:443", "10.0.0.0/8", "api.other.org")


@pytest.mark.parametrize("asked,looser", [
    (False, False), (("a.example.org:443",), False), (("*.b.example.org:443",), False),
    (("10.1.0.0/16:22",), False), (("api.other.org:80",), False),
    (True, True), (("example.org:443",), True), (("a.example.org",), True),
    (("a.example.org:80",), True), (("11.0.0.0/8",), True), (("0.0.0.0/0:443",), True),
    (("10.0.0.1", "evil.org:443"), True),
])
def test_a_request_is_looser_unless_every_entry_is_covered(asked, looser):
    assert is_looser("network_access", asked, LIST) is looser
    assert is_looser("network_access", asked, True) is False
    assert is_looser("network_access", asked, False) is (asked is not False)


def test_two_lists_intersect():
    other = ("a.example.org:443", "b.example.org:80", "10.2.0.0/16:22", "api.other.org:443")
    assert strictest("network_access", LIST, other) == (
        "10.2.0.0/16:22", "a.example.org:443", "api.other.org:443")
    assert strictest("network_access", LIST, True) == LIST
    assert strictest("network_access", LIST, False) is False
    assert strictest("network_access", ("a.org:1",), ("b.org:1",)) is False


def test_max_network_bytes_is_unlimited_unless_set():
    assert ResourceLimits().max_network_bytes is None
    assert coerce_limit("max_network_bytes", "unlimited") is None
    assert coerce_limit("max_network_bytes", "1000") == 1000
    assert is_looser("max_network_bytes", None, 1000)
    assert not is_looser("max_network_bytes", 1000, None)
    assert strictest("max_network_bytes", None, 5) == 5
