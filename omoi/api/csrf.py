"""Cross-site request forgery. A page on another site can make a browser send simple requests
(a form, a no-cors fetch) with the browser's cookies. No API route reads a cookie; on top of
that, every state-changing request is refused when ``Sec-Fetch-Site`` or ``Origin`` shows
another site (403), and when it declares a body type other than JSON, even with an empty body
(415): a form can only send urlencoded, multipart or text/plain. The board's sign-in and
sign-out forms are the exceptions to the second rule only."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, Response, request

from omoi.api.errors import error_response

STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
FORMS = {"board.sign_in", "board.sign_out"}
SAME_SITE = {"same-origin", "none"}  # "none": the user typed or bookmarked it


def cross_site() -> bool:
    """Does the browser say this request comes from another origin? ``Sec-Fetch-Site`` is
    set by the browser alone and survives proxies that rewrite ``Host``; browsers without it
    send ``Origin``, compared with the host asked for. Clients that are not browsers send
    neither, and could send anything: they carry no victim's cookies."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site.lower() not in SAME_SITE
    origin = request.headers.get("Origin")
    return origin is not None and urlsplit(origin).netloc.lower() != request.host.lower()


def check() -> Response | None:
    if request.method not in STATE_CHANGING:
        return None
    if cross_site():
        return error_response(
            403,
            "cross_site",
            "state-changing requests from another site are refused",
            {
                "origin": request.headers.get("Origin"),
                "site": request.headers.get("Sec-Fetch-Site"),
            },
        )
    if request.endpoint not in FORMS and request.mimetype and not request.is_json:
        return error_response(
            415,
            "unsupported_media_type",
            "request body must be application/json",
            {"content_type": request.content_type},
        )
    return None


def register(app: Flask) -> None:
    app.before_request(check)
