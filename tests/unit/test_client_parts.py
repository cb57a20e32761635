"""The HTTP client's pure parts: reading Server-Sent Events, turning an error answer into an
``ApiError``, what it sends (bodies, query values) and which event ends a ticket's walk."""

from __future__ import annotations

import json

from omoi.client import _error, _given, _query_value, _sse, ends_ticket


def test_each_event_is_its_data_lines_joined_and_decoded() -> None:
    stream = [
        b": keep-alive\n",
        b"\n",
        b"id: 7\r\n",
        b"event: ticket.created\n",
        b'data: {"id": 7,\n',
        b'data:"type": "ticket.created"}\n',
        b"\n",
        b"retry: 1000\n",
        b'data: {"id": 8}\n',
        b"\n",
        b'data: {"id": 9}\n',  # cut off before its blank line: never complete
    ]
    assert list(_sse(iter(stream))) == [{"id": 7, "type": "ticket.created"}, {"id": 8}]


def test_an_error_answer_carries_the_apis_code_message_and_details() -> None:
    body = {"error": {"code": "not_found", "message": "ticket x not found", "details": {"a": 1}}}
    err = _error(404, json.dumps(body).encode())
    assert (err.status, err.code, err.message, err.details) == (
        404,
        "not_found",
        "ticket x not found",
        {"a": 1},
    )
    assert str(err) == "404 not_found: ticket x not found"


def test_an_answer_not_shaped_as_omois_error_keeps_its_status_and_first_line() -> None:
    proxy = _error(502, b"<html>Bad Gateway</html>\n<body>nginx</body>")
    assert (proxy.status, proxy.code, proxy.message) == (
        502,
        "http_502",
        "<html>Bad Gateway</html>",
    )
    assert _error(500, b"").message == "no error body"
    assert _error(400, b'{"error": "flat"}').code == "http_400"


def test_a_body_leaves_out_what_was_not_given_and_a_query_says_true_or_false() -> None:
    assert _given(reason=None, force=False, phase="PHASE_DESIGN") == {
        "force": False,
        "phase": "PHASE_DESIGN",
    }
    assert [_query_value(v) for v in (True, False, 3, "x")] == ["true", "false", "3", "x"]


def test_a_walk_ends_when_the_ticket_completes_is_cancelled_or_stops_being_active() -> None:
    def changed(status: str) -> dict[str, object]:
        return {"type": "ticket.phase_changed", "payload": {"status": status}}

    assert ends_ticket({"type": "ticket.completed", "payload": {}})
    assert ends_ticket({"type": "ticket.cancelled", "payload": {}})
    assert ends_ticket(changed("blocked"))
    assert not ends_ticket(changed("active"))
    assert not ends_ticket({"type": "task.succeeded", "payload": {}})
