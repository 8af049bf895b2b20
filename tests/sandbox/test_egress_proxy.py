"""The egress proxy on its own, spoken to over its unix socket as the sandbox's shim would:
decisions after resolution, the three dialects, and one audit record per connection."""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterator

import pytest

from agenticraft.sandbox.egress import AllowList, EgressProxy, StaticResolver
from agenticraft.wire.network import coerce
from egress_helpers import NamedServer, named_server

pytestmark = pytest.mark.timeout(60)


class CountingResolver(StaticResolver):
    """Records which names were looked up (a denied name must never reach DNS)."""

    def __init__(self, table):
        super().__init__(table)
        self.asked: list[str] = []

    def resolve(self, name):
        self.asked.append(name)
        return super().resolve(name)


TABLE = {"public.test": ["93.184.216.34"], "rebind.test": ["10.0.0.5", "127.0.0.1"],
         "meta.test": ["169.254.169.254"], "v6.test": ["::1"], "svc.test": ["127.0.0.1"],
         # IPv6 spellings of IPv4 addresses that ipaddress calls global: NAT64 of the metadata
         # address, 6to4 of 127.0.0.1
         "nat64.test": ["64:ff9b::a9fe:a9fe"], "sixto4.test": ["2002:7f00:1::1"]}


def allow(*entries: str) -> AllowList:
    return AllowList(coerce(list(entries)))


@pytest.mark.parametrize("host,port,allowed,why", [
    ("public.test", 443, True, ""),
    ("PUBLIC.test.", 443, True, ""),
    ("public.test", 80, False, "not in the allow-list"),
    ("rebind.test", 443, False, "10.0.0.5, 127.0.0.1, a non-public address"),
    ("meta.test", 443, False, "169.254.169.254"),
    ("v6.test", 443, False, "::1"),
    ("nat64.test", 443, False, "64:ff9b::a9fe:a9fe"),
    ("sixto4.test", 443, False, "2002:7f00:1::1"),
    ("svc.test", 8080, True, ""),            # resolves to an address listed explicitly
    ("127.0.0.1", 8080, True, ""),
    ("2130706433", 8080, True, ""),          # the same address, decimal: same answer
    ("2130706433", 8081, False, "(= 127.0.0.1) is not in the allow-list"),
    ("0x7f.0.0.1", 8081, False, "(= 127.0.0.1)"),
    ("[::ffff:127.0.0.1]", 8081, False, "(= 127.0.0.1)"),
    ("::1", 8080, False, "not in the allow-list"),
    ("10.9.9.9", 5432, True, ""),
    ("10.9.9.9", 5433, False, "not in the allow-list"),
    ("unlisted.test", 443, False, "not in the allow-list"),
    ("bad name", 443, False, "not a valid host name"),
])
def test_decisions_after_resolution(host, port, allowed, why):
    rules = allow("public.test:443", "rebind.test:443", "meta.test:443", "v6.test:443",
                  "nat64.test:443", "sixto4.test:443", "svc.test:8080", "127.0.0.1:8080",
                  "10.0.0.0/8:5432")
    decision = rules.decide(host, port, StaticResolver(TABLE))
    assert decision.allowed is allowed, decision
    if allowed:
        assert decision.address is not None
    else:
        assert why in decision.reason
        assert decision.reason.startswith("Permission denied: ")
        assert decision.reason.endswith("network_access allows only " + ", ".join(rules.value))


def test_denied_names_are_never_resolved():
    resolver = CountingResolver(TABLE)
    allow("public.test:443").decide("exfiltrate-secret.evil.test", 443, resolver)
    assert resolver.asked == []
    allow("public.test:443").decide("public.test", 443, resolver)
    assert resolver.asked == ["public.test"]


def test_the_checked_address_is_the_one_connected(monkeypatch):
    answers = iter([[ipaddress.ip_address("93.184.216.34")], [ipaddress.ip_address("127.0.0.1")]])

    class Rebinding:
        def resolve(self, name):
            return next(answers)

    decision = allow("public.test:443").decide("public.test", 443, Rebinding())
    assert str(decision.address) == "93.184.216.34"  # later answers are never consulted


@pytest.fixture
def setup() -> Iterator[tuple[EgressProxy, NamedServer, NamedServer, list[dict]]]:
    records: list[dict] = []
    with named_server("A") as a, named_server("B") as b:
        proxy = EgressProxy(allow(f"127.0.0.1:{a.port}", f"svc.test:{a.port}"),
                            on_record=records.append, user_id="ann",
                            resolver=StaticResolver(TABLE))
        proxy.start()
        proxy.begin_run(cell_id="cell-7")
        try:
            yield proxy, a, b, records
        finally:
            proxy.stop()


def connect(proxy: EgressProxy) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(10)
    sock.connect(proxy.socket_path)
    sock.sendall(proxy.key.encode() + b"\n")
    return sock


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size and (chunk := sock.recv(size - len(data))):
        data += chunk
    return data


def test_plain_http_is_forwarded_once_without_proxy_headers(setup):
    proxy, a, _, records = setup
    with connect(proxy) as sock:
        sock.sendall(f"GET http://127.0.0.1:{a.port}/ HTTP/1.1\r\nHost: 127.0.0.1:{a.port}\r\n"
                     "Proxy-Authorization: Basic c2VjcmV0\r\nConnection: keep-alive\r\n\r\n"
                     .encode())
        answer = read_all(sock)  # the proxy closes after one exchange
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"hello from A")
    assert proxy.wait_idle(10)
    (record,) = records
    assert record["type"] == "network" and record["allowed"] is True
    assert record["user_id"] == "ann" and record["cell_id"] == "cell-7"
    assert record["protocol"] == "http" and record["bytes_received"] == len(answer)
    assert "proxy-authorization" not in record


def test_connect_and_socks_reach_the_listed_server(setup):
    proxy, a, _, records = setup
    with connect(proxy) as sock:
        sock.sendall(f"CONNECT 127.0.0.1:{a.port} HTTP/1.1\r\n\r\n".encode())
        assert sock.recv(100).startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert read_all(sock).endswith(b"hello from A")
    with connect(proxy) as sock:
        name = b"svc.test"
        sock.sendall(b"\x05\x01\x00\x05\x01\x00\x03" + bytes([len(name)]) + name
                     + struct.pack("!H", a.port))
        assert read_exactly(sock, 12) == b"\x05\x00\x05\x00\x00\x01" + bytes(6)
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert read_all(sock).endswith(b"hello from A")
    assert proxy.wait_idle(10)
    assert [(r["protocol"], r["allowed"]) for r in records] == [("http-connect", True),
                                                                ("socks5", True)]


def test_refusals_answer_with_the_reason_and_are_recorded(setup):
    proxy, a, b, records = setup
    with connect(proxy) as sock:
        sock.sendall(f"CONNECT 127.0.0.1:{b.port} HTTP/1.1\r\n\r\n".encode())
        answer = read_all(sock).decode()
    assert answer.startswith(f"HTTP/1.1 403 Permission denied: 127.0.0.1:{b.port} is not in")
    with connect(proxy) as sock:  # SOCKS5 UDP ASSOCIATE
        sock.sendall(b"\x05\x01\x00\x05\x03\x00\x01" + bytes(4) + struct.pack("!H", 53))
        answer = read_all(sock)
    assert answer[2:4] == b"\x05\x07" and b"UDP to 0.0.0.0:53 is not allowed" in answer
    with connect(proxy) as sock:  # SOCKS5 with an IPv6 address
        sock.sendall(b"\x05\x01\x00\x05\x01\x00\x04" + socket.inet_pton(socket.AF_INET6, "::1")
                     + struct.pack("!H", a.port))
        answer = read_all(sock)
    assert answer[2:4] == b"\x05\x02" and b"[::1]" in answer
    assert proxy.wait_idle(10)
    assert [(r["protocol"], r["allowed"]) for r in records] == [
        ("http-connect", False), ("socks5-udp", False), ("socks5", False)]
    assert set(proxy.refused) == {f"127.0.0.1:{b.port}", "0.0.0.0:53", f"[::1]:{a.port}"}
    assert b.hits == 0


def test_byte_budget_cuts_the_connection(setup):
    proxy, a, _, records = setup
    proxy.max_bytes = 10_000
    with connect(proxy) as sock:
        sock.sendall(f"GET http://127.0.0.1:{a.port}/bytes/1000000 HTTP/1.1\r\n"
                     f"Host: x\r\n\r\n".encode())
        answer = read_all(sock)
    assert len(answer) < 1_000_000
    assert proxy.wait_idle(10)
    assert records[-1]["stopped"] == "max_network_bytes=10000 reached"


def test_a_connection_without_the_key_is_refused_and_recorded(setup):
    proxy, a, _, records = setup
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(proxy.socket_path)
        sock.sendall(b"0" * 32 + b"\n" + f"CONNECT 127.0.0.1:{a.port} HTTP/1.1\r\n\r\n".encode())
        assert read_all(sock) == b""
    assert proxy.wait_idle(10)
    assert [(r["protocol"], r["allowed"]) for r in records] == [("key", False)]
    assert a.hits == 0
