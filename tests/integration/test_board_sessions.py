"""The board is not an API credential: a browser signs in through a form and holds an opaque,
read-only board session scoped to /board; the API takes only bearer tokens; cross-site
state-changing requests are refused; board pages forbid framing, inline script, sniffing and
referrers. Each test is named after the attack it stops."""

from __future__ import annotations

import dataclasses
import re
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, update

from omoi.api import board, create_app
from omoi.api.auth import BOARD_READS
from omoi.config import Settings
from omoi.domain.auth import digest
from omoi.persistence import ApiToken, BoardSession, Database
from omoi.persistence.types import utcnow
from omoi.services import tokens
from omoi.services.dispatcher import NullDispatcher
from tests.support.api import ADMIN_TOKEN, bearer, submit

EVIL = "http://evil.example"
SESSION = "omoi_board"


@pytest.fixture(scope="module")
def bare(settings: Settings, db: Database) -> Flask:
    """An app whose test clients send no token: browsers."""
    return create_app(settings, db=db, dispatcher=NullDispatcher())


def sign_in(browser: Any, secret: str = ADMIN_TOKEN, **form: str) -> Any:
    """What a person does: open the sign-in page, paste the token, submit the form."""
    page = browser.get("/board/login").get_data(as_text=True)
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page
    return browser.post("/board/login", data={"token": secret, "csrf": found.group(1), **form})


def session_id(browser: Any) -> str:
    cookie = browser.get_cookie(SESSION, path="/board")
    assert cookie is not None
    return cookie.value  # type: ignore[no-any-return]


def token(db: Database, *scopes: str) -> tuple[uuid.UUID, str]:
    row, secret = tokens.create(db, f"board-{uuid.uuid4().hex[:6]}", list(scopes))
    return row["id"], secret


def by_hand(app: Flask, address: str = "127.0.0.1") -> Any:
    """A client that sends exactly the ``Cookie`` header a request names: a test client's
    cookie jar would replace it with the jar's own cookies for the path."""
    client = app.test_client(use_cookies=False)
    client.environ_base["REMOTE_ADDR"] = address
    return client


def signed_out(resp: Any) -> bool:
    return resp.status_code == 302 and resp.headers["Location"].startswith("/board/login")


def test_a_token_in_a_board_url_no_longer_signs_in(bare: Flask) -> None:
    browser = bare.test_client()
    resp = browser.get(f"/board/agents?token={ADMIN_TOKEN}")
    assert signed_out(resp)
    assert ADMIN_TOKEN not in resp.headers.get("Set-Cookie", "")
    assert browser.get_cookie(SESSION, path="/board") is None
    assert browser.get_cookie("omoi_token") is None
    assert signed_out(browser.get("/board"))


def test_an_unauthenticated_board_request_gets_the_sign_in_page_not_json(bare: Flask) -> None:
    browser = bare.test_client()
    for path, back in [
        ("/board", "/board"),
        ("/board/agents", "/board/agents"),
        (f"/board/tickets/{uuid.uuid4()}", None),
        ("/board/stream", "/board"),
    ]:
        resp = browser.get(path)
        assert signed_out(resp), (path, resp.status_code)
        if back is not None:
            assert resp.headers["Location"] == f"/board/login?next={back}"
    page = browser.get("/board/agents", follow_redirects=True)
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert '<form method="post" action="/board/login">' in html
    assert 'type="password"' in html and 'name="next" value="/board/agents"' in html


def test_signing_in_stores_an_opaque_session_not_the_token(bare: Flask, db: Database) -> None:
    browser = bare.test_client()
    resp = sign_in(browser)
    assert resp.status_code == 303 and resp.headers["Location"] == "/board"
    cookie = next(c for c in resp.headers.getlist("Set-Cookie") if c.startswith(f"{SESSION}="))
    assert ADMIN_TOKEN not in cookie
    attributes = {a.strip().split("=")[0].lower(): a for a in cookie.split(";")[1:]}
    assert attributes["path"].strip() == "Path=/board"
    assert "httponly" in attributes and attributes["samesite"].strip() == "SameSite=Strict"
    assert attributes["max-age"].strip() == "Max-Age=43200"  # OMOI_BOARD_SESSION_LIFETIME
    assert "secure" not in attributes  # plain HTTP
    sid = session_id(browser)
    with db.session() as session:
        row = session.scalars(select(BoardSession).where(BoardSession.digest == digest(sid))).one()
        admin = session.scalars(select(ApiToken).where(ApiToken.digest == digest(ADMIN_TOKEN)))
        assert row.token_id == admin.one().id
        lifetime = row.expires_at - utcnow()
        assert timedelta(hours=11, minutes=59) < lifetime <= timedelta(hours=12)
        stored = session.scalars(select(BoardSession.digest)).all()
    assert sid not in stored and digest(ADMIN_TOKEN) not in stored
    assert browser.get("/board").status_code == 200


def test_signing_in_redirects_only_to_board_pages(bare: Flask) -> None:
    for target, landing in [
        ("/board/agents", "/board/agents"),
        ("https://evil.example/board", "/board"),
        ("//evil.example/board", "/board"),
        ("/board\\..\\@evil.example", "/board"),
    ]:
        resp = sign_in(bare.test_client(), next=target)
        assert resp.headers["Location"] == landing, target


def test_the_session_cookie_is_secure_over_tls_and_forwarded_proto_needs_a_trusted_proxy(
    settings: Settings, db: Database, bare: Flask
) -> None:
    def session_cookie(app: Flask, **extra: Any) -> str:
        browser = app.test_client()
        page = browser.get("/board/login", **extra).get_data(as_text=True)
        found = re.search(r'name="csrf" value="([^"]+)"', page)
        assert found
        form = {"token": ADMIN_TOKEN, "csrf": found.group(1)}
        resp = browser.post("/board/login", data=form, **extra)
        assert resp.status_code == 303
        return next(c for c in resp.headers.getlist("Set-Cookie") if c.startswith(SESSION))

    assert "Secure" in session_cookie(bare, base_url="https://localhost")
    forwarded = {"headers": {"X-Forwarded-Proto": "https"}}
    assert "Secure" not in session_cookie(bare, **forwarded)  # anyone can send the header
    behind = dataclasses.replace(settings, trusted_proxies=1)
    proxied = create_app(behind, db=db, dispatcher=NullDispatcher())
    assert "Secure" in session_cookie(proxied, **forwarded)


def test_a_board_session_authenticates_no_api_route(bare: Flask, api_client: Any) -> None:
    """Whatever the token may do, its session reads board pages and the board stream only."""
    browser = bare.test_client()
    sign_in(browser)  # the admin token
    cookie = {"Cookie": f"{SESSION}={session_id(browser)}; omoi_token={ADMIN_TOKEN}"}
    raw = by_hand(bare)
    assert raw.get("/board", headers=cookie).status_code == 200  # the cookie does arrive
    ticket = submit(api_client, [{"key": "a", "task_type": "noop"}], title="keep me")
    checked = 0
    for rule in bare.url_map.iter_rules():
        if rule.rule.startswith("/board") or rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", ticket["id"], rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            resp = raw.open(path, method=method, json={}, headers=cookie)
            if rule.rule in {"/healthz", "/readyz", "/api/v1/openapi.json"}:
                continue
            assert resp.status_code == 401, (method, path, resp.status_code)
            checked += 1
    assert checked >= 35
    for rule in bare.url_map.iter_rules():  # and the board's pages only answer GETs
        if rule.endpoint in BOARD_READS:
            path = re.sub(r"<(?:\w+:)?(\w+)>", ticket["id"], rule.rule)
            assert raw.post(path, json={}, headers=cookie).status_code == 405, path
    assert api_client.get(f"/api/v1/tickets/{ticket['id']}").get_json()["status"] == "active"


# each attack, and the status that refuses it before any token is looked at
CROSS_SITE_POSTS: dict[str, tuple[int, dict[str, Any]]] = {
    "a form post from another site": (
        403,
        {
            "content_type": "application/x-www-form-urlencoded",
            "headers": {"Origin": EVIL, "Sec-Fetch-Site": "cross-site"},
        },
    ),
    "a form post from an old browser that names no origin": (
        415,
        {
            "content_type": "application/x-www-form-urlencoded",
        },
    ),
    "a text/plain form carrying JSON": (
        403,
        {
            "content_type": "text/plain",
            "data": '{"reason": "x"}',
            "headers": {"Origin": EVIL},
        },
    ),
    "a no-cors fetch with no body": (403, {"headers": {"Sec-Fetch-Site": "cross-site"}}),
    "a JSON post from another site, even with a bearer": (
        403,
        {
            "json": {"reason": "x"},
            "headers": {"Origin": EVIL, **bearer()},
        },
    ),
    "a post from a sibling site": (403, {"json": {}, "headers": {"Sec-Fetch-Site": "same-site"}}),
}


@pytest.mark.parametrize("attack", list(CROSS_SITE_POSTS))
def test_a_cross_origin_form_post_cannot_cancel_a_ticket(
    bare: Flask, api_client: Any, attack: str
) -> None:
    browser = bare.test_client()
    sign_in(browser)
    ticket = submit(api_client, [{"key": "a", "task_type": "noop"}], title="not yours")
    status, attempt = CROSS_SITE_POSTS[attack]
    request = dict(attempt)
    cookies = {"Cookie": f"{SESSION}={session_id(browser)}; omoi_token={ADMIN_TOKEN}"}
    raw = by_hand(bare)
    assert raw.get("/board", headers=cookies).status_code == 200  # the session is live
    request["headers"] = {**cookies, **request.get("headers", {})}
    resp = raw.post(f"/api/v1/tickets/{ticket['id']}/cancel", **request)
    assert resp.status_code == status, resp.get_json()
    assert api_client.get(f"/api/v1/tickets/{ticket['id']}").get_json()["status"] == "active"
    same_site = browser.post(  # the same request from the API's own origin goes through
        f"/api/v1/tickets/{ticket['id']}/cancel",
        json={},
        headers={"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin", **bearer()},
    )
    assert same_site.status_code == 200
    assert api_client.get(f"/api/v1/tickets/{ticket['id']}").get_json()["status"] == "cancelled"


def test_a_cross_site_sign_in_form_is_refused(bare: Flask) -> None:
    """Login CSRF: another site must not sign a browser in, with any token."""
    browser = bare.test_client()
    page = browser.get("/board/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    form = {"token": ADMIN_TOKEN, "csrf": csrf}
    refused = browser.post("/board/login", data=form, headers={"Origin": EVIL})
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "cross_site"
    forged = browser.post("/board/login", data={**form, "csrf": "guessed"})
    assert forged.status_code == 403 and "expired" in forged.get_data(as_text=True)
    fresh = bare.test_client()  # a form from elsewhere carries no sign-in cookie
    assert fresh.post("/board/login", data=form).status_code == 403
    for client in (browser, fresh):
        assert client.get_cookie(SESSION, path="/board") is None
    assert sign_in(browser).status_code == 303  # the real form still works


def test_a_wrong_revoked_or_non_reading_token_does_not_sign_in(bare: Flask, db: Database) -> None:
    revoked_id, revoked = token(db, "read")
    tokens.revoke(db, str(revoked_id))
    _, agent_only = token(db, "agent")
    for secret in ("omoi_guess", revoked, agent_only, ""):
        browser = bare.test_client()
        resp = sign_in(browser, secret)
        assert resp.status_code == 401 and 'role="alert"' in resp.get_data(as_text=True)
        assert browser.get_cookie(SESSION, path="/board") is None
        assert signed_out(browser.get("/board"))


def test_a_flood_of_sign_in_guesses_or_forged_session_ids_is_rate_limited(
    settings: Settings, db: Database
) -> None:
    """Each failed sign-in or unknown session id counts against the client address, like a
    wrong bearer token; past the limit the form answers 429 without looking the token up."""
    limited = dataclasses.replace(settings, unauthenticated_rate_limit="3/minute")
    app = create_app(limited, db=db, dispatcher=NullDispatcher())
    address = f"127.1.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250 + 1}"
    browser = app.test_client()
    browser.environ_base["REMOTE_ADDR"] = address
    assert sign_in(browser, "omoi_guess").status_code == 401
    forged = {"Cookie": f"{SESSION}=forged"}
    assert signed_out(by_hand(app, address).get("/board", headers=forged))
    assert sign_in(browser, "omoi_guess").status_code == 401
    refused = sign_in(browser, ADMIN_TOKEN)  # even the right token waits now
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert browser.get_cookie(SESSION, path="/board") is None
    assert by_hand(app, address).get("/board", headers=forged).status_code == 429
    elsewhere = app.test_client()
    elsewhere.environ_base["REMOTE_ADDR"] = "127.1.255.254"
    assert sign_in(elsewhere).status_code == 303


def test_revoking_the_token_ends_its_board_sessions(bare: Flask, db: Database) -> None:
    token_id, secret = token(db, "read")
    browser = bare.test_client()
    sign_in(browser, secret)
    assert browser.get("/board").status_code == 200
    tokens.revoke(db, str(token_id))
    assert signed_out(browser.get("/board"))  # at once: sessions are not cached
    assert signed_out(browser.get("/board/stream?timeout=0.1"))


def test_a_revoked_tokens_open_board_stream_ends_within_the_stream_cap(
    bare: Flask, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An open stream is re-authorised at each reconnect; the board caps how long one runs."""
    monkeypatch.setattr(board, "BOARD_STREAM_SECONDS", 0.5)
    token_id, secret = token(db, "read")
    browser = bare.test_client()
    sign_in(browser, secret)
    started = time.monotonic()
    stream = browser.get("/board/stream?timeout=3600")  # asks for an hour
    assert stream.status_code == 200 and stream.get_data(as_text=True).startswith("retry:")
    assert time.monotonic() - started < 30
    tokens.revoke(db, str(token_id))
    assert signed_out(browser.get("/board/stream?timeout=3600"))  # the reconnect is refused


def test_the_task_panel_reads_only_what_the_sessions_token_may_read_on_the_api(
    bare: Flask, api_client: Any, db: Database
) -> None:
    """The panel's JSON (/board/tasks/<id>) takes the board session exactly as the pages do:
    none, an ended one or one whose token lost ``read`` gets the sign-in page, not the task;
    a bearer token without ``read`` is refused as on GET /api/v1/tasks/<id>."""
    ticket = submit(api_client, [{"key": "secret-step", "task_type": "noop"}])
    task_id = ticket["tasks"][0]["id"]
    path = f"/board/tasks/{task_id}"
    assert signed_out(bare.test_client().get(path))
    reader_id, reader = token(db, "read")
    browser = bare.test_client()
    sign_in(browser, reader)
    resp = browser.get(path)
    assert resp.status_code == 200 and resp.get_json()["key"] == "secret-step"
    assert browser.post(path, json={}).status_code == 405  # the session only reads
    with db.session() as session:  # the token may no longer read
        session.execute(update(ApiToken).where(ApiToken.id == reader_id).values(scopes=["agent"]))
    resp = browser.get(path)
    assert signed_out(resp) and "secret-step" not in resp.get_data(as_text=True)
    _, agent_only = token(db, "agent")
    for route in (path, f"/api/v1/tasks/{task_id}"):
        refused = bare.test_client().get(route, headers=bearer(agent_only))
        assert refused.status_code == 403, route
        assert "secret-step" not in refused.get_data(as_text=True)
    revoked_id, revoked = token(db, "read")
    browser = bare.test_client()
    sign_in(browser, revoked)
    tokens.revoke(db, str(revoked_id))
    assert signed_out(browser.get(path))


def test_an_expired_session_is_sent_to_sign_in_and_purged(bare: Flask, db: Database) -> None:
    browser = bare.test_client()
    sign_in(browser)
    old = digest(session_id(browser))
    with db.session() as session:
        session.execute(
            update(BoardSession)
            .where(BoardSession.digest == old)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert signed_out(browser.get("/board"))
    sign_in(bare.test_client())  # opening a session purges the expired ones
    with db.session() as session:
        assert session.get(BoardSession, old) is None


def test_signing_out_ends_the_session_for_whoever_kept_its_id(bare: Flask, db: Database) -> None:
    browser = bare.test_client()
    sign_in(browser)
    sid = session_id(browser)
    thief = by_hand(bare)
    assert thief.get("/board", headers={"Cookie": f"{SESSION}={sid}"}).status_code == 200
    assert browser.post("/board/logout", headers={"Origin": EVIL}).status_code == 403
    assert browser.get("/board").status_code == 200  # another site cannot sign you out
    resp = browser.post("/board/logout")
    assert resp.status_code == 303 and resp.headers["Location"] == "/board/login"
    assert browser.get_cookie(SESSION, path="/board") is None
    with db.session() as session:
        assert session.get(BoardSession, digest(sid)) is None
    assert signed_out(thief.get("/board", headers={"Cookie": f"{SESSION}={sid}"}))


INLINE = re.compile(r"<script(?![^>]*\bsrc=)|<style|\sstyle=|\son[a-z]+=|javascript:", re.I)


def test_board_pages_forbid_framing_inline_script_sniffing_and_referrers(
    bare: Flask, api_client: Any
) -> None:
    ticket = submit(api_client, [{"key": "a", "task_type": "noop"}])
    browser = bare.test_client()
    login = browser.get("/board/login")
    sign_in(browser)
    pages = [login] + [
        browser.get(path)
        for path in (
            "/board",
            "/board?partial=1",
            "/board/agents",
            f"/board/tickets/{ticket['id']}",
            f"/board/tasks/{ticket['tasks'][0]['id']}",
            "/board/static/board.js",
        )
    ]
    pages.append(bare.test_client().get("/board"))  # the redirect to sign in too
    for resp in pages:
        csp = resp.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Referrer-Policy"] == "same-origin"
        assert resp.headers["X-Frame-Options"] == "DENY"
        if resp.mimetype == "text/html":
            html = resp.get_data(as_text=True)
            assert not INLINE.search(html), INLINE.search(html)
            assert resp.headers["Cache-Control"] == "no-store"


def test_the_board_follows_its_own_stream_with_its_session(bare: Flask, api_client: Any) -> None:
    browser = bare.test_client()
    sign_in(browser)
    page = browser.get("/board").get_data(as_text=True)
    found = re.search(r'data-stream="([^"]+)"', page)
    assert found and found.group(1).startswith("/board/stream?after=")
    ticket = submit(api_client, [{"key": "a", "task_type": "noop"}], title="streamed")
    resp = browser.get(found.group(1).replace("&amp;", "&") + "&timeout=1")
    assert resp.status_code == 200 and resp.mimetype == "text/event-stream"
    body = resp.get_data(as_text=True)
    assert "event: ticket.created" in body and ticket["id"] in body
    assert browser.get("/board/stream?timeout=nope").status_code == 422
