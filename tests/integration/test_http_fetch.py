"""The guarded client behind the ``http`` handler, against real servers on loopback: what a
task's URL cannot reach by default, and what an allowlist opens (and no more)."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest
import trustme

from omoi.domain.errors import PermanentError, TransientError
from omoi.domain.netpolicy import parse_allowlist
from omoi.worker.fetch import FetchPolicy, RequestRefused, ResponseTooLarge, fetch
from tests.support.httpd import Route, Server, serve

SECRET = b"the-loopback-secret"
DEFAULT = FetchPolicy()


def allowing(entries: str, **extra: Any) -> FetchPolicy:
    return FetchPolicy(allow=parse_allowlist(entries), **extra)


@pytest.fixture()
def secret() -> Iterator[Server]:
    """What only the worker's own network reaches: an admin port on loopback."""
    with serve({"/secret": Route(body=SECRET)}) as server:
        yield server


@pytest.mark.parametrize(
    "spelling",
    [
        "127.0.0.1",
        "localhost",
        "[::ffff:127.0.0.1]",
        "2130706433",  # 127.0.0.1 as one number
        "0x7f.1",
        "127.1",
        "0.0.0.0",  # Linux connects it to loopback
    ],
)
def test_loopback_secret_is_refused_by_default_however_its_host_is_spelled(
    secret: Server, spelling: str
) -> None:
    with pytest.raises(RequestRefused, match=r"loopback|unspecified") as refused:
        fetch(secret.url("/secret", host=spelling), policy=DEFAULT)
    assert "OMOI_HTTP_ALLOW" in str(refused.value)
    assert secret.requests == []


def test_request_line_to_redis_port_is_refused() -> None:
    with pytest.raises(RequestRefused, match=r"127\.0\.0\.1 is a loopback address"):
        fetch("http://127.0.0.1:6379/", method="POST", body=b"FLUSHALL\r\n", policy=DEFAULT)


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "gopher://127.0.0.1:6379/_INFO", "ftp://example.com/", "http:///x"],
)
def test_url_that_is_not_http_is_refused(url: str) -> None:
    with pytest.raises(RequestRefused, match="only http:// and https://"):
        fetch(url, policy=DEFAULT)


def test_credentials_in_the_url_are_refused(secret: Server) -> None:
    with pytest.raises(RequestRefused, match="credentials"):
        fetch(f"http://user:pw@127.0.0.1:{secret.port}/secret", policy=allowing("127.0.0.1"))


def test_allowlisted_loopback_server_is_fetched_with_its_own_host_header(secret: Server) -> None:
    response = fetch(secret.url("/secret"), policy=allowing(f"127.0.0.1:{secret.port}"))
    assert (response.status, response.body) == (200, SECRET)
    assert secret.requests[0].headers["Host"] == f"127.0.0.1:{secret.port}"


def test_redirect_from_an_allowed_server_to_another_loopback_port_is_refused(
    secret: Server,
) -> None:
    routes = {"/go": Route(302, headers={"Location": secret.url("/secret")})}
    with serve(routes) as allowed, pytest.raises(RequestRefused) as refused:
        fetch(allowed.url("/go"), policy=allowing(f"127.0.0.1:{allowed.port}"))
    assert str(refused.value).startswith(
        f"refused {secret.url('/secret')} (redirected from {allowed.url('/go')}): "
        "127.0.0.1 is a loopback address"
    )
    assert [r.path for r in allowed.requests] == ["/go"]
    assert secret.requests == []


def test_redirect_to_a_url_that_is_not_http_is_refused() -> None:
    routes = {"/go": Route(302, headers={"Location": "file:///etc/passwd"})}
    with serve(routes) as allowed, pytest.raises(RequestRefused, match="only http://"):
        fetch(allowed.url("/go"), policy=allowing(f"127.0.0.1:{allowed.port}"))


def test_redirect_within_the_allowlist_is_followed_and_303_turns_a_post_into_a_get() -> None:
    routes = {
        "/old": Route(301, headers={"Location": "/see-other"}),
        "/see-other": Route(303, headers={"Location": "/page"}),
        "/page": Route(body=b"landed"),
    }
    with serve(routes) as allowed:
        response = fetch(
            allowed.url("/old"),
            method="PUT",
            body=b"data",
            headers={"Content-Type": "text/plain"},
            policy=allowing(f"127.0.0.1:{allowed.port}"),
        )
    assert (response.status, response.body, response.url) == (200, b"landed", allowed.url("/page"))
    assert [(r.method, r.path) for r in allowed.requests] == [
        ("PUT", "/old"),
        ("PUT", "/see-other"),
        ("GET", "/page"),
    ]
    assert "Content-Type" not in allowed.requests[-1].headers


def test_redirect_loop_stops_at_the_hop_limit() -> None:
    with serve({"/loop": Route(302, headers={"Location": "/loop"})}) as allowed:
        policy = allowing(f"127.0.0.1:{allowed.port}", max_redirects=3)
        with pytest.raises(RequestRefused, match="more than 3 redirects"):
            fetch(allowed.url("/loop"), policy=policy)
    assert len(allowed.requests) == 4


def test_redirect_to_another_origin_drops_the_credentials() -> None:
    with serve({"/page": Route(body=b"other")}) as other:
        routes = {"/go": Route(302, headers={"Location": other.url("/page")})}
        with serve(routes) as first:
            fetch(
                first.url("/go"),
                headers={"Authorization": "Bearer for-first", "X-Trace": "1"},
                policy=allowing(f"127.0.0.1:{first.port},127.0.0.1:{other.port}"),
            )
    assert first.requests[0].headers["Authorization"] == "Bearer for-first"
    assert "Authorization" not in other.requests[0].headers
    assert other.requests[0].headers["X-Trace"] == "1"


def test_dns_rebinding_cannot_swap_the_checked_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A name answers an allowed address when checked, then a secret one: the connection
    still goes to the address that was checked, because the name is looked up once."""
    real = socket.getaddrinfo
    lookups: list[str] = []

    def rebinding(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "rebind.test":
            return real(host, port, *args, **kwargs)
        lookups.append(host)
        return real("127.0.0.1" if len(lookups) == 1 else "127.0.0.2", port, *args)

    with (
        serve({"/secret": Route(body=SECRET)}, host="127.0.0.2") as hidden,
        serve({"/secret": Route(body=b"public")}, port=hidden.port) as allowed,
    ):
        monkeypatch.setattr(socket, "getaddrinfo", rebinding)
        response = fetch(
            f"http://rebind.test:{allowed.port}/secret",
            policy=allowing(f"127.0.0.1:{allowed.port}"),
        )
    assert response.body == b"public"
    assert lookups == ["rebind.test"]
    assert allowed.requests[0].headers["Host"] == f"rebind.test:{allowed.port}"
    assert hidden.requests == []


def _endless(sent: list[int]) -> Any:
    def write(out: BinaryIO) -> None:
        chunk = b"x" * 65536
        while True:
            out.write(chunk)
            sent.append(len(chunk))

    return write


def test_endless_response_fails_permanently_at_the_size_cap() -> None:
    sent: list[int] = []
    with serve({"/big": Route(body=_endless(sent))}) as allowed:
        policy = allowing(f"127.0.0.1:{allowed.port}", max_bytes=256 * 1024)
        started = time.monotonic()
        with pytest.raises(ResponseTooLarge, match="more than the 262144 bytes allowed"):
            fetch(allowed.url("/big"), policy=policy)
    assert time.monotonic() - started < 10
    assert sum(sent) < 64 * 1024 * 1024  # the client hung up; the server did not stream on


def test_declared_length_over_the_cap_is_refused_before_reading() -> None:
    with serve({"/big": Route(body=b"x" * 300_000)}) as allowed:
        policy = allowing(f"127.0.0.1:{allowed.port}", max_bytes=100_000)
        with pytest.raises(ResponseTooLarge, match="sends 300000 bytes, over the 100000"):
            fetch(allowed.url("/big"), policy=policy)


def test_response_within_the_cap_is_returned_whole() -> None:
    with serve({"/ok": Route(body=b"y" * 100_000)}) as allowed:
        policy = allowing(f"127.0.0.1:{allowed.port}", max_bytes=100_000)
        assert fetch(allowed.url("/ok"), policy=policy).body == b"y" * 100_000


def test_server_errors_are_transient_and_client_errors_permanent() -> None:
    routes = {"/down": Route(503, b"later"), "/gone": Route(404, b"no")}
    with serve(routes) as allowed:
        policy = allowing(f"127.0.0.1:{allowed.port}")
        with pytest.raises(TransientError, match="answered 503"):
            fetch(allowed.url("/down"), policy=policy)
        with pytest.raises(PermanentError, match="answered 404"):
            fetch(allowed.url("/gone"), policy=policy)


@pytest.fixture()
def ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> trustme.CA:
    """A certificate authority the client trusts, as if it were a public one."""
    authority = trustme.CA()
    bundle = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    return authority


def _tls(ca: trustme.CA, name: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(context)
    return context


def test_https_to_the_checked_address_verifies_the_host_name_sent_as_sni(ca: trustme.CA) -> None:
    with serve({"/": Route(body=b"tls")}, tls=_tls(ca, "localhost")) as server:
        response = fetch(server.url("/", host="localhost"), policy=allowing("localhost"))
    assert response.body == b"tls"
    assert server.sni == ["localhost"]


def test_https_certificate_for_another_name_is_refused(ca: trustme.CA) -> None:
    with (
        serve({"/": Route(body=b"tls")}, tls=_tls(ca, "other.example")) as server,
        pytest.raises(PermanentError, match="TLS failed"),
    ):
        fetch(server.url("/", host="localhost"), policy=allowing("localhost"))
    assert server.requests == []
