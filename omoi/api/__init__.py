"""The HTTP API: ``create_app()`` (gunicorn ``'omoi.api:create_app()'``)."""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from omoi import process
from omoi.api import (
    agents,
    auth,
    board,
    csrf,
    errors,
    events,
    guards,
    health,
    locks,
    messages,
    metrics,
    tasks,
    tickets,
)
from omoi.api import workflows as workflow_api
from omoi.api.runtime import Runtime
from omoi.api.schemas.common import ErrorOut
from omoi.composition import Role, Root
from omoi.config import Settings
from omoi.domain.auth import Scope
from omoi.persistence import Database
from omoi.services import tokens
from omoi.services.dispatcher import Dispatcher
from omoi.services.events import EventHub, StreamSlots
from omoi.services.external_agents import Doorbell
from omoi.services.read.logs import LogHub


class OmoiApi(Api):
    """flask-smorest Api whose errors use (and document) omoi's JSON error shape."""

    ERROR_SCHEMA = ErrorOut

    def handle_http_exception(self, error: HTTPException):  # type: ignore[no-untyped-def]
        return errors.http_error(error)


def require_tokens(settings: Settings, db: Database) -> None:
    """Token auth is not optional: ``OMOI_BOOTSTRAP_TOKEN`` becomes an admin token, and a
    production API (PostgreSQL) with no active token refuses to start."""
    if settings.bootstrap_token:
        tokens.ensure(db, "bootstrap", settings.bootstrap_token, [Scope.ADMIN])
    elif not settings.embedded and not tokens.any_active(db):
        raise RuntimeError(
            "no API token is configured: create one with `omoi token create --scope admin "
            "NAME` or set OMOI_BOOTSTRAP_TOKEN"
        )


def create_app(
    settings: Settings | None = None,
    *,
    db: Database | None = None,
    dispatcher: Dispatcher | None = None,
) -> Flask:
    root = Root(settings or Settings.from_env(), Role.API, db=db, dispatcher=dispatcher)
    settings = root.settings
    process.set_up(settings.log_level)
    root.workflows  # noqa: B018 - loaded now: a bad workflow file stops start-up
    app = Flask("omoi")
    if settings.trusted_proxies:  # believe their X-Forwarded-For/-Proto/-Host/-Port, no more
        hops = settings.trusted_proxies
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops
        )
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        API_TITLE="omoi",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api/v1",
        OPENAPI_JSON_PATH="openapi.json",
        JSON_SORT_KEYS=False,
    )
    db = root.db
    require_tokens(settings, db)
    authenticate = tokens.Authenticator(db)
    app.extensions["omoi"] = Runtime(
        settings=settings,
        db=db,
        uow=root.uow,
        policy=root.policy,
        broker_ping=root.producer.ping,
        authenticate=authenticate,
        hub=EventHub(db),
        # a revoked token's streams end within the revocation delay of its requests
        streams=StreamSlots(db, settings.max_streams_per_token, authenticate.ttl / 2),
        logs=LogHub(db, listen=root.log_signal.listen),
        log_signal=root.log_signal,
        doorbell=Doorbell(listen=root.work_signal.listen),
        log_limits=root.log_limits,
    )
    api = OmoiApi(app)
    api.register_blueprint(tickets.blp)
    api.register_blueprint(tasks.blp)
    api.register_blueprint(agents.blp)
    api.register_blueprint(workflow_api.blp)
    api.register_blueprint(events.blp)
    api.register_blueprint(messages.blp)
    api.register_blueprint(locks.blp)
    app.register_blueprint(board.blp)
    app.register_blueprint(health.blp)
    app.register_blueprint(metrics.blp)
    metrics.register(app)
    errors.register(app)
    csrf.register(app)
    auth.register(app, authenticate, settings)
    guards.register(app)
    return app
