"""Body guards whatever the framing, on a real gunicorn API: a body sent with
``Transfer-Encoding: chunked`` has no Content-Length, and used to reach the view's parser
unchecked (500 for deep JSON, a NUL, a lone surrogate). Beside the Schemathesis run, which
frames every body with Content-Length."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from omoi.persistence import Database
from tests.integration.test_api_input import counts, with_payload
from tests.support.api import ADMIN_TOKEN
from tests.support.procs import start_api

LIMIT = 16 * 1024


@pytest.fixture(scope="module")
def api_port(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    # a small body limit: a body over it is read whole before the 413, so the server does not
    # close with unread bytes (the kernel would answer them with a reset, losing the 413)
    limited = {**env, "OMOI_MAX_BODY_BYTES": str(LIMIT)}
    proc, server_env = start_api(limited, tmp_path_factory.mktemp("framing"))
    try:
        yield int(server_env["OMOI_API_PORT"])
    finally:
        proc.stop()


def chunked_post(port: int, body: bytes, piece: int = 1000) -> tuple[int, dict[str, Any]]:
    """POST /api/v1/tickets with the body in chunks; the status and the JSON answer."""
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + piece]), body[i : i + piece])
        for i in range(0, len(body), piece)
    )
    head = (
        "POST /api/v1/tickets HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + chunks + b"0\r\n\r\n")
        answer = b""
        while data := sock.recv(65536):
            answer += data
    status_line, _, rest = answer.partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), json.loads(payload)


def ticket_with(payload: str) -> bytes:
    return with_payload(payload).encode()


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"[" * 5000 + b"]" * 5000, 400, "bad_request"),
        (ticket_with('"nul\\u0000"'), 422, "invalid_value"),
        (ticket_with('"\\ud800"'), 422, "invalid_value"),
        (ticket_with("NaN"), 422, "invalid_value"),
        (ticket_with("-Infinity"), 422, "invalid_value"),
        (ticket_with("1e999"), 422, "invalid_value"),
        (b'{"title": 5}', 422, "unprocessable_entity"),
        (ticket_with(f'"{"y" * (LIMIT + 1000)}"'), 413, "request_entity_too_large"),
    ],
    ids=["5000 deep", "NUL", "lone surrogate", "NaN", "-Infinity", "1e999", "schema", "too big"],
)
def test_a_chunked_body_meets_the_same_guards(
    api_port: int, db: Database, body: bytes, status: int, code: str
) -> None:
    before = counts(db)
    got, answer = chunked_post(api_port, body)
    assert (got, answer["error"]["code"]) == (status, code), answer
    assert set(answer["error"]) == {"code", "message", "details"}
    assert counts(db) == before
