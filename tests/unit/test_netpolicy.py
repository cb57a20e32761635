"""The address rules of the ``http`` handler, without sockets: which addresses a task's URL
may lead to, and how ``OMOI_HTTP_ALLOW`` opens hosts and networks."""

from __future__ import annotations

import ipaddress

import pytest

from omoi.config import Settings
from omoi.domain.netpolicy import Allowance, parse_allowlist, refusal, refused_kind


def ips(*addresses: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    return [ipaddress.ip_address(a) for a in addresses]


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("fd12:3456::1", "private (unique local)"),
        ("169.254.10.10", "link-local"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("100.64.0.1", "shared (carrier-grade NAT)"),
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("168.63.129.16", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("192.0.0.192", "cloud metadata"),
    ],
)
def test_internal_address_is_refused_by_default(address: str, kind: str) -> None:
    assert refused_kind(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "cloud metadata"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:192.168.0.1", "private"),
        ("::ffff:0.0.0.0", "unspecified"),
        ("::ffff:224.0.0.1", "multicast"),
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
        ("64:ff9b::a9fe:a9fe", "cloud metadata"),  # NAT64 of 169.254.169.254
        ("::127.0.0.1", "reserved"),  # IPv4-compatible, deprecated
    ],
)
def test_ipv6_form_of_an_internal_ipv4_address_is_refused(address: str, kind: str) -> None:
    assert refused_kind(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700::1111", "1.1.1.1"])
def test_public_address_is_allowed(address: str) -> None:
    assert refused_kind(ipaddress.ip_address(address)) is None
    assert refusal(address, 443, ips(address)) is None


def test_refusal_names_the_host_the_address_and_its_kind() -> None:
    assert refusal("127.0.0.1", 80, ips("127.0.0.1")) == "127.0.0.1 is a loopback address"
    assert refusal("metadata.google.internal", 80, ips("169.254.169.254")) == (
        "metadata.google.internal resolves to 169.254.169.254, a cloud metadata address"
    )
    mapped = refusal("::ffff:127.0.0.1", 80, ips("::ffff:127.0.0.1"))  # its form varies
    assert mapped is not None and mapped.endswith(" (127.0.0.1) is a loopback address")
    assert refusal("0.0.0.0", 80, ips("0.0.0.0")) == "0.0.0.0 is an unspecified address"


def test_name_resolving_to_a_public_and_a_loopback_address_is_refused() -> None:
    """The connection may go to any address of the answer, so every one must pass."""
    why = refusal("mixed.example", 80, ips("93.184.215.14", "127.0.0.1"))
    assert why == "mixed.example resolves to 127.0.0.1, a loopback address"


def test_name_without_addresses_is_refused() -> None:
    assert refusal("nowhere.example", 80, []) == "nowhere.example has no address"


def test_allowed_network_opens_its_addresses_and_no_others() -> None:
    allow = parse_allowlist("10.0.0.0/8")
    assert refusal("10.2.3.4", 80, ips("10.2.3.4"), allow) is None
    assert refusal("svc.internal", 80, ips("10.9.9.9"), allow) is None
    assert refusal("192.168.0.1", 80, ips("192.168.0.1"), allow) is not None
    assert refusal("127.0.0.1", 80, ips("127.0.0.1"), allow) is not None


def test_allowed_address_with_a_port_opens_that_port_alone() -> None:
    """A redirect from an allowed service to another port of the same host is refused."""
    allow = parse_allowlist("127.0.0.1:8080")
    assert refusal("127.0.0.1", 8080, ips("127.0.0.1"), allow) is None
    assert refusal("127.0.0.1", 6379, ips("127.0.0.1"), allow) == "127.0.0.1 is a loopback address"
    assert refusal("127.0.0.2", 8080, ips("127.0.0.2"), allow) is not None


def test_allowed_ipv4_network_covers_its_ipv4_mapped_form() -> None:
    allow = parse_allowlist("127.0.0.1/32")
    assert refusal("::ffff:127.0.0.1", 80, ips("::ffff:127.0.0.1"), allow) is None


def test_allowed_name_admits_what_it_resolves_to_but_not_its_addresses_by_number() -> None:
    allow = parse_allowlist("API.Internal.Example.,localhost:9000")
    assert refusal("api.internal.example", 80, ips("10.0.0.5"), allow) is None
    assert refusal("localhost", 9000, ips("127.0.0.1"), allow) is None
    assert refusal("localhost", 9001, ips("127.0.0.1"), allow) is not None
    assert refusal("127.0.0.1", 9000, ips("127.0.0.1"), allow) is not None
    assert refusal("other.internal.example", 80, ips("10.0.0.5"), allow) is not None


def test_allowlist_entries_parse_to_names_networks_and_ports() -> None:
    assert parse_allowlist(" 127.0.0.1/32, api.internal.example ,10.0.0.0/8,") == (
        Allowance(network=ipaddress.ip_network("127.0.0.1/32")),
        Allowance(host="api.internal.example"),
        Allowance(network=ipaddress.ip_network("10.0.0.0/8")),
    )
    assert parse_allowlist("[::1]:8443,fd00::/8,10.0.0.0/8:443") == (
        Allowance(network=ipaddress.ip_network("::1/128"), port=8443),
        Allowance(network=ipaddress.ip_network("fd00::/8")),
        Allowance(network=ipaddress.ip_network("10.0.0.0/8"), port=443),
    )
    assert parse_allowlist("") == ()


@pytest.mark.parametrize(
    "entry", ["10.0.0.1/8", "10.0.0", "host:http", "host:70000", "[::1", "bad host", "a..b", ":80"]
)
def test_malformed_allowlist_entry_is_an_error_not_an_open_door(entry: str) -> None:
    with pytest.raises(ValueError, match="OMOI_HTTP_ALLOW"):
        Settings.from_env({"OMOI_HTTP_ALLOW": entry})


def test_settings_read_the_allowlist_and_the_size_cap() -> None:
    settings = Settings.from_env({"OMOI_HTTP_ALLOW": "localhost", "OMOI_HTTP_MAX_BYTES": "10"})
    assert settings.http_allow == (Allowance(host="localhost"),)
    assert settings.http_max_bytes == 10
    assert Settings.from_env({}).http_allow == ()
    assert Settings.from_env({}).http_max_bytes == 1024 * 1024
