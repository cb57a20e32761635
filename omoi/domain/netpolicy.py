"""Which addresses the ``http`` handler may connect to: pure rules, no sockets.

Whoever submits an ``http`` task names its URL, and the worker fetches it from inside the
operator's network: without these rules a task reads what only that network can reach (a
loopback admin port, a cloud metadata service, Redis) and hands it back as its result. So
every special-purpose range of the IANA address registries is refused, whatever name leads
to it, unless an operator's allowlist (``OMOI_HTTP_ALLOW``) opens a host or a network.
The ranges are listed here rather than taken from ``ipaddress``'s ``is_global``, whose
answers changed between Python releases.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Instance metadata services hand out cloud credentials; named so the refusal says so.
METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean
        "169.254.170.2",  # AWS ECS task credentials
        "fd00:ec2::254",  # AWS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
        "168.63.129.16",  # Azure's wire server: a public address, refused by name
    )
)

REFUSED: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(network), kind)
    for network, kind in (
        ("0.0.0.0/8", "unspecified"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "shared (carrier-grade NAT)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "reserved"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "reserved"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "reserved"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::/8", "reserved"),
        ("64:ff9b:1::/48", "reserved"),
        ("100::/64", "reserved"),
        ("2001::/23", "reserved"),
        ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"),
        ("fc00::/7", "private (unique local)"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "reserved"),
        ("ff00::/8", "multicast"),
    )
)

NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAME = re.compile(r"^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$")


def _bare(address: IPAddress) -> IPAddress:
    """``address`` without an IPv6 zone (``fe80::1%eth0``), which equality would compare."""
    return ipaddress.ip_address(str(address).split("%", 1)[0])


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one leads to: IPv4-mapped (``::ffff:127.0.0.1`` is how a
    dual-stack socket reaches 127.0.0.1), 6to4 (``2002::/16``) or NAT64 (``64:ff9b::/96``)."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def refused_kind(address: IPAddress) -> str | None:
    """What kind of address the default rules refuse ``address`` as, or None if public."""
    address = _bare(address)
    inner = embedded_ipv4(address)
    if inner is not None:
        return refused_kind(inner)
    if address in METADATA:
        return "cloud metadata"
    return next((kind for network, kind in REFUSED if address in network), None)


def _literal(host: str, address: IPAddress) -> bool:
    """Whether ``host`` is ``address`` written out, so the refusal needs not name both."""
    try:
        return ipaddress.ip_address(host) == address
    except ValueError:
        return False


def normal_host(host: str) -> str:
    """A host name as the allowlist compares it: lower case, no trailing dot."""
    return host.lower().rstrip(".")


@dataclass(frozen=True)
class Allowance:
    """One entry of ``OMOI_HTTP_ALLOW``: a host name or a network, on any port or on one."""

    host: str | None = None
    network: IPNetwork | None = None
    port: int | None = None

    def _port_matches(self, port: int) -> bool:
        return self.port is None or self.port == port

    def admits_name(self, host: str, port: int) -> bool:
        """An allowed name admits whatever it resolves to: the operator trusts its DNS."""
        return self.host is not None and self.host == normal_host(host) and self._port_matches(port)

    def admits_address(self, address: IPAddress, port: int) -> bool:
        if self.network is None or not self._port_matches(port):
            return False
        address = _bare(address)
        mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
        return address in self.network or (mapped is not None and mapped in self.network)


def _split_port(entry: str) -> tuple[str, int | None]:
    """``[v6]:port``, ``host:port``, a bare IPv6 address or network, or a host."""
    if entry.startswith("["):
        host, sep, rest = entry[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{entry!r}: a bracketed IPv6 entry is [address]:port")
        return host, _port(entry, rest[1:]) if rest else None
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, _port(entry, port)
    return entry, None


def _port(entry: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{entry!r}: {text!r} is not a port")
    return int(text)


def parse_allowance(entry: str) -> Allowance:
    """``10.0.0.0/8``, ``127.0.0.1:8080``, ``[::1]:8080``, ``fd12::/16``, ``api.example``,
    ``localhost:9000``. A network's host bits must be zero (``10.0.0.1/8`` is a typo)."""
    host, port = _split_port(entry.strip())
    try:
        return Allowance(network=ipaddress.ip_network(host), port=port)
    except ValueError as exc:
        if any(c in host for c in ":/") or host.replace(".", "").isdigit():
            raise ValueError(f"{entry!r}: {exc}") from exc
    name = normal_host(host)
    if not _NAME.match(name):
        raise ValueError(f"{entry!r} is not a host name, an address or a network")
    return Allowance(host=name, port=port)


def parse_allowlist(text: str) -> tuple[Allowance, ...]:
    """The comma-separated entries of ``OMOI_HTTP_ALLOW``."""
    return tuple(parse_allowance(e) for e in text.split(",") if e.strip())


def refusal(
    host: str, port: int, addresses: Sequence[IPAddress], allow: Sequence[Allowance] = ()
) -> str | None:
    """Why connecting to ``host``:``port`` at ``addresses`` (what ``host`` resolved to) is
    refused, or None. Every address must pass, since the connection may go to any of them:
    a name resolving to a public and a loopback address is refused."""
    if any(a.admits_name(host, port) for a in allow):
        return None
    if not addresses:
        return f"{host} has no address"
    for address in addresses:
        if any(a.admits_address(address, port) for a in allow):
            continue
        kind = refused_kind(address)
        if kind is not None:
            inner = embedded_ipv4(_bare(address))
            shown = f"{address} ({inner})" if inner else str(address)
            article = "an" if kind[0] in "aeiou" else "a"
            if _literal(host, address):
                return f"{shown} is {article} {kind} address"
            return f"{host} resolves to {shown}, {article} {kind} address"
    return None
