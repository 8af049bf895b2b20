"""``network_access``: off, on, or a list of allowed destinations - parsed and compared here.

One module owns the form, so the config file, the environment, traitlets, ``%%secure --network``,
``Policy.resolve`` and the host's egress proxy all read the same thing. A destination is one of

    "host:port"            a name, exactly (case and a trailing dot do not matter)
    "*.example.org:443"    any name below example.org (not example.org itself)
    "host"                 any port
    "10.0.0.7:5432", "10.0.0.0/8:443", "[2001:db8::1]:443", "[2001:db8::/32]"
                           addresses and CIDR blocks (IPv6 in brackets when a port follows)

The normal form is a sorted tuple of canonical strings; ``[]`` means ``False``. Names only ever
grant *public* addresses: the proxy refuses a listed name that resolves to loopback, link-local,
private or metadata addresses unless that address (or a block holding it) is listed too.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import socket
from typing import Any

from agenticraft.wire.errors import ConfigurationError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
NetworkAccess = bool | tuple[str, ...]

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_FORM = ('network_access must be true, false or a list of destinations such as '
         '"pypi.org:443", "*.example.org:443", "host", "10.0.0.0/8:5432", "[::1]:8080"')


@dataclasses.dataclass(frozen=True, order=True)
class Destination:
    """One allowed destination: a name, a wildcard (``*.suffix``) or a block, and a port."""

    host: str                       # canonical name, "*.suffix", or str(network)
    port: int | None = None         # None: any port
    network: IPNetwork | None = dataclasses.field(default=None, compare=False)

    @property
    def wildcard(self) -> bool:
        return self.host.startswith("*.")

    def __str__(self) -> str:
        host = self.host
        if self.network is not None and self.network.version == 6:
            host = f"[{host}]"
        return host if self.port is None else f"{host}:{self.port}"

    def covers(self, other: Destination) -> bool:
        """Everything ``other`` allows is allowed by ``self`` (used to compare with ceilings)."""
        if self.port is not None and other.port != self.port:
            return False
        if self.network is not None or other.network is not None:
            return (self.network is not None and other.network is not None
                    and other.network.version == self.network.version
                    and other.network.subnet_of(self.network))  # type: ignore[arg-type]
        if self.wildcard:
            suffix = self.host[1:]  # ".example.org"
            return other.host.endswith(suffix) or other.host == self.host
        return other.host == self.host

    def allows_name(self, name: str, port: int) -> bool:
        """Does this entry allow the (canonical) name ``name`` on ``port``?"""
        if self.network is not None or (self.port is not None and self.port != port):
            return False
        if self.wildcard:
            return name.endswith(self.host[1:])
        return name == self.host

    def allows_address(self, address: IPAddress, port: int) -> bool:
        """Does this entry list ``address`` (explicitly, by address or block) on ``port``?"""
        if self.network is None or (self.port is not None and self.port != port):
            return False
        return address.version == self.network.version and address in self.network


def parse_address(text: str) -> IPAddress | None:
    """An IP address in any spelling a C resolver accepts, canonical; None for a name.

    ``2130706433``, ``0x7f000001``, ``0177.0.0.1`` and ``127.1`` are all 127.0.0.1 to
    ``inet_aton``; an IPv4-mapped IPv6 address is its IPv4 address. Treating them as the address
    they denote is what stops an alternate spelling from slipping past a check.
    """
    text = text.strip().strip("[]")
    if "%" in text:  # a zone index: fe80::1%eth0
        text = text.split("%", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        if ":" in text or not re.fullmatch(r"[0-9a-fA-FxX.]+", text):
            return None
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def canonical_name(name: str) -> str:
    """Lower case, no trailing dot, IDNA-encoded; ConfigurationError if not a host name."""
    text = name.strip().rstrip(".").lower()
    try:
        text = text.encode("idna").decode("ascii") if not text.isascii() else text
    except UnicodeError:
        raise ConfigurationError(f"{name!r} is not a valid host name") from None
    labels = text.split(".")
    if not text or len(text) > 253 or not all(_LABEL.match(label) for label in labels):
        raise ConfigurationError(f"{name!r} is not a valid host name")
    return text


def parse_destination(text: str) -> Destination:
    """One destination string -> ``Destination`` (ConfigurationError naming what is valid)."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigurationError(f"{_FORM}; got {text!r}")
    raw = text.strip()
    host, port = _split_port(raw)
    if "/" in host:
        try:
            network = ipaddress.ip_network(host.strip("[]"), strict=False)
        except ValueError:
            raise ConfigurationError(f"{raw!r}: {host!r} is not a CIDR block") from None
        return Destination(str(network), port, network)
    if ":" in host or re.fullmatch(r"[0-9.]+", host):
        # Lists are written with canonical addresses (dotted quads, IPv6 text); alternate
        # spellings are only a concern where a connection names its destination.
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            raise ConfigurationError(f"{raw!r}: {host!r} is not an IP address") from None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        network = ipaddress.ip_network(address)
        return Destination(str(network.network_address), port, network)
    if parse_address(host) is not None:
        raise ConfigurationError(f"{raw!r}: write the address as {parse_address(host)}")
    if port is None and "." not in host and host.lower() != "localhost":
        raise ConfigurationError(f"{raw!r} is neither true/false nor a destination; a "
                                 "single-label host needs a port (\"db:5432\")")
    if host.startswith("*."):
        return Destination("*." + canonical_name(host[2:]), port)
    if "*" in host:
        raise ConfigurationError(f"{raw!r}: a wildcard is only allowed as '*.domain'")
    return Destination(canonical_name(host), port)


def _split_port(raw: str) -> tuple[str, int | None]:
    if raw.startswith("["):
        host, sep, rest = raw[1:].partition("]")
        if not sep:
            raise ConfigurationError(f"{raw!r}: missing ']' after an IPv6 address")
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise ConfigurationError(f"{raw!r}: expected ':PORT' after ']'")
        return host, _port(rest[1:], raw)
    if raw.count(":") > 1:  # a bare IPv6 address (or block): no port
        return raw, None
    host, sep, port = raw.partition(":")
    return host, (_port(port, raw) if sep else None)


def _port(text: str, raw: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ConfigurationError(f"{raw!r}: the port must be a number from 1 to 65535")
    return int(text)


def coerce(value: Any) -> NetworkAccess:
    """The normal form of a ``network_access`` value (bool or sorted tuple of strings).

    Accepts booleans, the usual words ("true", "off", ...), a list/tuple/set of destination
    strings, or a comma-separated string of them (environment variables, ``%%secure``).
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in BOOL_WORDS:
            return BOOL_WORDS[word]
        if not word:
            raise ConfigurationError(f"{_FORM}; got {value!r}")
        value = [part for part in value.split(",") if part.strip()]
    if isinstance(value, list | tuple | set | frozenset):
        try:
            entries = {str(parse_destination(item)) if isinstance(item, str) else _bad(item)
                       for item in value}
        except ConfigurationError as exc:
            if str(exc).startswith("network_access"):
                raise
            raise ConfigurationError(f"network_access: {exc}") from None
        return tuple(sorted(entries)) or False
    raise ConfigurationError(f"{_FORM}; got {value!r}")


def _bad(item: Any) -> str:
    raise ConfigurationError(f"{_FORM}; got {item!r} in the list")


#: How true and false may be written (network_access, filesystem_access, config switches).
BOOL_WORDS = {"1": True, "true": True, "yes": True, "on": True,
              "0": False, "false": False, "no": False, "off": False}


def destinations(value: NetworkAccess) -> tuple[Destination, ...]:
    """The parsed entries of a normalised list value (empty for booleans)."""
    if isinstance(value, bool):
        return ()
    return tuple(parse_destination(item) for item in value)


def is_looser(value: NetworkAccess, ceiling: NetworkAccess) -> bool:
    """True when ``value`` allows a destination that ``ceiling`` does not."""
    if ceiling is True or value is False:
        return False
    if ceiling is False or value is True:
        return True
    return bool(uncovered(value, ceiling))


def uncovered(value: NetworkAccess, ceiling: NetworkAccess) -> list[str]:
    """The entries of ``value`` that no entry of ``ceiling`` covers."""
    if isinstance(value, bool):
        return [] if not value or ceiling is True else ["any destination"]
    if ceiling is True:
        return []
    limits = destinations(ceiling)
    return [str(d) for d in destinations(value) if not any(c.covers(d) for c in limits)]


def strictest(a: NetworkAccess, b: NetworkAccess) -> NetworkAccess:
    """The intersection: what both allow (used to combine two policies)."""
    if a is True:
        return b
    if b is True:
        return a
    if a is False or b is False:
        return False
    left, right = destinations(a), destinations(b)
    kept = {str(d) for d in left if any(c.covers(d) for c in right)}
    kept |= {str(d) for d in right if any(c.covers(d) for c in left)}
    return tuple(sorted(kept)) or False


def describe(value: NetworkAccess) -> str:
    """How the setting reads in messages, ``doctor`` and the panel."""
    if value is True:
        return "any destination (host network)"
    if value is False:
        return "none (no network)"
    return "only " + ", ".join(value)


def is_allow_list(value: Any) -> bool:
    return isinstance(value, tuple)

