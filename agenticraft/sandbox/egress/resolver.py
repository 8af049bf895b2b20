"""Name resolution for the egress proxy: the host's resolver, or a fixed table (tests, pinning).

The sandbox has no resolver of its own; names are resolved here, once per connection, and the
proxy connects to exactly the address it checked (so a second, rebound answer is never used).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping, Sequence
from typing import Protocol

from agenticraft.wire.network import IPAddress, parse_address


class Resolver(Protocol):
    def resolve(self, name: str) -> list[IPAddress]:
        """Addresses of ``name`` (canonical form), [] when it does not resolve."""


class SystemResolver:
    """The host's own resolver (``getaddrinfo``: /etc/hosts, DNS, nsswitch)."""

    def resolve(self, name: str) -> list[IPAddress]:
        try:
            infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError, OSError):
            return []
        seen: list[IPAddress] = []
        for *_, sockaddr in infos:
            address = parse_address(str(sockaddr[0]))
            if address is not None and address not in seen:
                seen.append(address)
        return seen


class StaticResolver:
    """A hosts-file-like table: ``{"api.example.org": ["203.0.113.7"]}``; other names fail."""

    def __init__(self, table: Mapping[str, Sequence[str]]) -> None:
        self.table = {name.lower().rstrip("."): [ipaddress.ip_address(a) for a in addresses]
                      for name, addresses in table.items()}

    def resolve(self, name: str) -> list[IPAddress]:
        return list(self.table.get(name, []))
