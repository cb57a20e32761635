"""gunicorn's settings for the API, in one place: ``omoi api`` (and through it ``omoi up``, the
Procfile, compose and the tests) starts ``gunicorn -c python:omoi.gunicorn_conf``; options on
its command line override these.

The workers are gevent's: each connection is a greenlet rather than one of a few threads, so
an event stream (held as long as its client follows) or a client sending its headers slowly
costs a greenlet, not a share of the process. Once gevent has patched the standard library,
psycopg (3.1.14 and later), redis-py, kombu and SQLAlchemy's pool all wait cooperatively.
This module lives outside ``omoi.api`` on purpose: gunicorn's master imports it before it
forks, and Flask, Celery and the rest must be imported in the workers, after gevent patched
what they use."""

from __future__ import annotations

import os

from omoi.config import Settings

_settings = Settings.from_env()

wsgi_app = "omoi.api:create_app()"
bind = [f"{_settings.api_host}:{_settings.api_port}"]
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gevent"
# per process: open streams, slow clients and requests together (gunicorn's default)
worker_connections = 1000
# gevent's worker gives a request's headers this long too: a client sending them a byte at a
# time is disconnected after 5 s instead of holding its connection
keepalive = 5
