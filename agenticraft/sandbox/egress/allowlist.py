"""Which connections an allow-list permits, decided after name resolution.

Rules, in order:
1. The requested host is read the way a C resolver would read it: ``2130706433``,
   ``0x7f000001``, ``0177.0.0.1``, ``127.1``, ``[::ffff:127.0.0.1]`` are all 127.0.0.1.
2. An address is allowed only where an address or block entry lists it (with the port).
3. A name is resolved only if a name entry allows it (denied names never reach DNS); then each
   resolved address is allowed if it is *public* (``is_global``) or listed explicitly. A listed
   name that resolves to loopback, link-local (cloud metadata), private or other special
   addresses is refused: that is what DNS rebinding and internal aliases would exploit.
4. The proxy connects to the one address the decision names, never re-resolving.
"""

from __future__ import annotations

import dataclasses
import ipaddress

from agenticraft.sandbox.egress.resolver import Resolver
from agenticraft.wire import network
from agenticraft.wire.errors import ConfigurationError
from agenticraft.wire.network import IPAddress, NetworkAccess, parse_address


@dataclasses.dataclass(frozen=True)
class Decision:
    allowed: bool
    destination: str                  # host:port as asked
    address: IPAddress | None = None  # where to connect (allowed) or what was refused
    reason: str = ""


class AllowList:
    """A normalised ``network_access`` list and the decision for one (host, port)."""

    def __init__(self, value: NetworkAccess) -> None:
        if not network.is_allow_list(value):
            raise ConfigurationError(f"an egress proxy needs a list of destinations, not {value!r}")
        self.value: tuple[str, ...] = tuple(value)  # type: ignore[arg-type]
        self.entries = network.destinations(value)

    def __str__(self) -> str:
        return "[" + ", ".join(self.value) + "]"

    def decide(self, host: str, port: int, resolver: Resolver) -> Decision:
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if not 0 < port < 65536:
            return self.deny(shown, None, f"port {port} is not a valid port")
        address = parse_address(host)
        if address is not None:
            if any(d.allows_address(address, port) for d in self.entries):
                return Decision(True, shown, address)
            spelled = "" if str(address) == host.strip("[]") else f" (= {address})"
            return self.deny(shown, address, f"{shown}{spelled} is not in the allow-list")
        try:
            name = network.canonical_name(host)
        except ConfigurationError:
            return self.deny(shown, None, f"{host!r} is not a valid host name")
        if not any(d.allows_name(name, port) for d in self.entries):
            return self.deny(shown, None, f"{shown} is not in the allow-list")
        addresses = resolver.resolve(name)
        if not addresses:
            return self.deny(shown, None, f"{name} does not resolve")
        for candidate in addresses:
            if is_public(candidate) or any(d.allows_address(candidate, port)
                                          for d in self.entries):
                return Decision(True, shown, candidate)
        return self.deny(shown, addresses[0],
                          f"{name} resolves to {', '.join(map(str, addresses))}, a non-public "
                          "address that is not listed explicitly")

    def deny(self, shown: str, address: IPAddress | None, why: str) -> Decision:
        return Decision(False, shown, address,
                        f"Permission denied: {why}; network_access allows only "
                        f"{', '.join(self.value)}")


#: NAT64's well-known prefix (RFC 6052): the last 32 bits are an IPv4 address.
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def is_public(address: IPAddress) -> bool:
    """Global, and so is any IPv4 address it carries: ``ipaddress`` calls NAT64 (64:ff9b::/96)
    and 6to4 (2002::/16) addresses global whatever IPv4 address they embed, so a name resolving
    to 64:ff9b::a9fe:a9fe would reach the metadata address 169.254.169.254 through a NAT64."""
    if not address.is_global:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        embedded = (address.ipv4_mapped or address.sixtofour
                    or (ipaddress.IPv4Address(int(address) & 0xFFFFFFFF) if address in NAT64
                        else None))
        if embedded is not None:
            return embedded.is_global
    return True
