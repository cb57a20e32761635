"""The guarded HTTP client behind the ``http`` handler.

A URL comes from whoever submitted the task, so each hop of a request is checked before it
connects (``omoi.domain.netpolicy``): the host is resolved once, every address it resolved to
must be allowed, and the connection goes to the address that was checked, never through a
second lookup that a rebinding DNS server could answer differently. The request still carries
the URL's own ``Host``, and for https the certificate is checked against the URL's host name
(sent as SNI). Redirects are followed here, hop by hop under the same checks, and the body is
read in chunks and refused past ``OMOI_HTTP_MAX_BYTES``, never buffered beyond it.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import SplitResult, urljoin, urlsplit

import urllib3
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, SSLError

from omoi.config import Settings
from omoi.domain.errors import PermanentError, TransientError
from omoi.domain.netpolicy import Allowance, IPAddress, refusal

MAX_REDIRECTS = 5
CHUNK = 64 * 1024
REDIRECTS = frozenset({301, 302, 303, 307, 308})
DEFAULT_PORTS = {"http": 80, "https": 443}
# Credentials meant for one origin are not handed to the next (as browsers and requests do).
ORIGIN_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
BODY_HEADERS = frozenset({"content-type", "content-length", "content-encoding"})


class RequestRefused(PermanentError):
    """The URL, or a redirect, leads somewhere the worker's policy does not let tasks reach."""


class ResponseTooLarge(PermanentError):
    """The response is longer than ``OMOI_HTTP_MAX_BYTES``: the same would come back again."""


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to, in the resolver's order of preference."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise TransientError(f"cannot resolve {host}: {exc}") from exc
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))


@dataclass(frozen=True)
class FetchPolicy:
    allow: tuple[Allowance, ...] = ()
    max_bytes: int = 1024 * 1024
    max_redirects: int = MAX_REDIRECTS


@cache
def worker_policy() -> FetchPolicy:
    """This process's policy, read once from its environment: handlers get no Settings."""
    settings = Settings.from_env()
    return FetchPolicy(allow=settings.http_allow, max_bytes=settings.http_max_bytes)


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    url: str


@dataclass(frozen=True)
class _Target:
    url: SplitResult
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> _Target:
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise RequestRefused(f"{url}: only http:// and https:// URLs with a host are fetched")
        if parts.username is not None or parts.password is not None:
            raise RequestRefused(f"{url}: credentials in a URL are not sent; use a header")
        try:
            port = DEFAULT_PORTS[parts.scheme] if parts.port is None else parts.port
        except ValueError as exc:
            raise RequestRefused(f"{url}: {exc}") from exc
        return cls(parts, parts.hostname, port)

    @property
    def origin(self) -> tuple[str, str, int]:
        return self.url.scheme, self.host, self.port

    @property
    def host_header(self) -> str:
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == DEFAULT_PORTS[self.url.scheme] else f"{name}:{self.port}"

    @property
    def path(self) -> str:
        return (self.url.path or "/") + (f"?{self.url.query}" if self.url.query else "")


def fetch(
    url: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    policy: FetchPolicy | None = None,
) -> Response:
    """``method url`` under ``policy`` (the worker's by default), following redirects. A
    refused hop raises ``RequestRefused`` naming why, before any connection to it; a final
    5xx raises ``TransientError`` and a 4xx ``PermanentError``, the body unread."""
    policy = policy or worker_policy()
    sent = {k: v for k, v in (headers or {}).items() if k.lower() != "host"}
    target = _Target.of(url)
    for hop in range(policy.max_redirects + 1):
        addresses = resolve(target.host, target.port)
        why = refusal(target.host, target.port, addresses, policy.allow)
        if why is not None:
            via = f" (redirected from {url})" if hop else ""
            raise RequestRefused(
                f"refused {target.url.geturl()}{via}: {why} "
                "(OMOI_HTTP_ALLOW opens hosts and networks)"
            )
        pool, response = _open(target, addresses, method, body, sent, timeout)
        with pool, response:  # closing the response closes its connection, unread or not
            location = response.headers.get("Location")
            if response.status not in REDIRECTS or not location:
                return _final(target, response, policy.max_bytes)
        following = _Target.of(urljoin(target.url.geturl(), location))
        if response.status == 303 or (response.status in (301, 302) and method == "POST"):
            method = "GET" if method != "HEAD" else method
            body = None
            sent = {k: v for k, v in sent.items() if k.lower() not in BODY_HEADERS}
        if following.origin != target.origin:
            sent = {k: v for k, v in sent.items() if k.lower() not in ORIGIN_HEADERS}
        target = following
    raise RequestRefused(f"{url}: more than {policy.max_redirects} redirects")


def _pool(target: _Target, address: IPAddress, timeout: float) -> urllib3.HTTPConnectionPool:
    """A pool of one connection to ``address``, checked address in hand; for https the
    certificate must match the URL's host name, which is also sent as SNI."""
    common: dict[str, Any] = {
        "timeout": urllib3.Timeout(connect=timeout, read=timeout),
        "maxsize": 1,
        "retries": False,
    }
    if target.url.scheme == "http":
        return urllib3.HTTPConnectionPool(str(address), target.port, **common)
    return urllib3.HTTPSConnectionPool(
        str(address),
        target.port,
        cert_reqs="CERT_REQUIRED",
        server_hostname=target.host,
        assert_hostname=target.host,
        **common,
    )


def _open(
    target: _Target,
    addresses: list[IPAddress],
    method: str,
    body: bytes | None,
    headers: dict[str, str],
    timeout: float,
) -> tuple[urllib3.HTTPConnectionPool, urllib3.BaseHTTPResponse]:
    """Send the request to the first of ``addresses`` that takes a connection; the response
    is unread, and closing the pool closes it."""
    failures = []
    for address in addresses:
        pool = _pool(target, address, timeout)
        try:
            response = pool.urlopen(
                method,
                target.path,
                body=body,
                headers={**headers, "Host": target.host_header},
                redirect=False,
                retries=False,
                preload_content=False,
                assert_same_host=False,
            )
        except (NewConnectionError, ConnectTimeoutError) as exc:
            pool.close()
            failures.append(f"{address}: {exc}")
            continue
        except SSLError as exc:
            pool.close()
            raise PermanentError(f"{target.url.geturl()}: TLS failed: {exc}") from exc
        except BaseException:
            pool.close()
            raise
        return pool, response
    raise TransientError(f"cannot connect to {target.url.geturl()}: {'; '.join(failures)}")


def _final(target: _Target, response: urllib3.BaseHTTPResponse, limit: int) -> Response:
    """The last hop's response, its body read in chunks up to ``limit`` bytes (decoded)."""
    url = target.url.geturl()
    if response.status >= 400:
        error = TransientError if response.status >= 500 else PermanentError
        raise error(f"{url} answered {response.status}")
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ResponseTooLarge(f"{url} sends {declared} bytes, over the {limit} allowed")
    chunks, size = [], 0
    for chunk in response.stream(CHUNK):
        size += len(chunk)
        if size > limit:
            raise ResponseTooLarge(f"{url} sent more than the {limit} bytes allowed")
        chunks.append(chunk)
    return Response(response.status, b"".join(chunks), url)
