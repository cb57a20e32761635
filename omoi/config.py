"""Settings read from ``OMOI_*`` environment variables.

With nothing set omoi runs embedded: a SQLite file for the record and kombu's SQLAlchemy
transport (``omoi-sqla+sqlite://``, another SQLite file) for Celery: a laptop needs no servers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from omoi.domain.auth import exec_types
from omoi.domain.netpolicy import Allowance, parse_allowlist

LIST = "tuple[str, ...]"  # a comma-separated setting


def _data_dir(env: dict[str, str]) -> Path:
    return Path(env.get("OMOI_DATA_DIR", ".omoi")).resolve()


def _redis_db(url: str) -> int:
    """The database number of a Redis URL (``redis://host:6379/9`` or ``?db=9``; default 0)."""
    parts = urlsplit(url)
    number = parse_qs(parts.query).get("db", [parts.path.strip("/")])[0]
    return int(number) if number.isdigit() else 0


@dataclass(frozen=True)
class Settings:
    """Every setting, each read from ``OMOI_<FIELD NAME>`` by ``from_env`` (a comma-separated
    list for a tuple); the README's Configuration table gives their defaults and effects."""

    #: The record: ``OMOI_DATABASE_URL`` (a SQLite file in the data directory by default).
    database_url: str
    #: Celery's transport: ``OMOI_BROKER_URL`` (kombu's SQLAlchemy transport on a SQLite file).
    broker_url: str
    #: Where the embedded files, the local token and ``omoi up``'s logs live: ``OMOI_DATA_DIR``.
    data_dir: Path
    #: Modules whose ``@handler``s workers import: ``OMOI_HANDLERS``.
    handlers: tuple[str, ...] = ()
    #: A Celery app whose tasks workers run as ``celery:<name>`` (``package.module:app``):
    #: ``OMOI_CELERY_APP``.
    celery_app: str = ""
    #: Seconds between an agent's heartbeats: ``OMOI_HEARTBEAT_INTERVAL``.
    heartbeat_interval: float = 30.0
    #: Silence after which an agent is stale and its attempts lost: ``OMOI_HEARTBEAT_TIMEOUT``.
    heartbeat_timeout: float = 90.0
    #: Seconds between the starts of beat's rounds of sweeps: ``OMOI_SWEEP_INTERVAL``.
    sweep_interval: float = 5.0
    #: Age at which a queued, never-published task is published: ``OMOI_OUTBOX_REPUBLISH_AGE``.
    outbox_republish_age: float = 10.0
    #: Age at which a published, unclaimed task is published again: ``OMOI_OUTBOX_LOST_AGE``.
    outbox_lost_age: float = 600.0
    #: Redis's visibility timeout, above every time limit: ``OMOI_VISIBILITY_TIMEOUT``.
    visibility_timeout: int = 7200
    #: Seconds from a task's soft time limit to its hard one: ``OMOI_TIME_LIMIT_GRACE``.
    time_limit_grace: float = 10.0
    #: Seconds a stopping worker waits before handing attempts back: ``OMOI_SHUTDOWN_GRACE``.
    shutdown_grace: float = 10.0
    #: The longest request body the API reads (413 above it): ``OMOI_MAX_BODY_BYTES``.
    max_body_bytes: int = 16 * 1024 * 1024
    #: The most tasks one ticket may hold: ``OMOI_MAX_TASKS_PER_TICKET``.
    max_tasks_per_ticket: int = 20_000
    #: How deeply a request's JSON may nest (400 deeper): ``OMOI_MAX_JSON_DEPTH``.
    max_json_depth: int = 32
    #: A task's ``max_retries`` when it gives none: ``OMOI_DEFAULT_MAX_RETRIES``.
    default_max_retries: int = 3
    #: A task's first retry wait (doubling) when it gives none: ``OMOI_RETRY_BACKOFF``.
    retry_backoff: float = 1.0
    #: A task's longest retry wait when it gives none: ``OMOI_RETRY_BACKOFF_MAX``.
    retry_backoff_max: float = 60.0
    #: Longer retry waits are held in the database and woken by beat: ``OMOI_RETRY_ETA_MAX``.
    retry_eta_max: float = 60.0
    #: SQLAlchemy's pool size per process: ``OMOI_DB_POOL_SIZE``.
    db_pool_size: int = 10
    #: Seconds a worker waits out a database outage (the API: none): ``OMOI_DB_OUTAGE_PATIENCE``.
    db_outage_patience: float = 300.0
    #: Where ``omoi api`` and ``omoi up`` listen: ``OMOI_API_HOST``.
    api_host: str = "127.0.0.1"
    #: The port they listen on (``--port`` overrides it): ``OMOI_API_PORT``.
    api_port: int = 5000
    #: Where the CLI finds the API (else host and port above): ``OMOI_API_URL``.
    api_url: str = ""
    #: structlog's level: ``OMOI_LOG_LEVEL``.
    log_level: str = "INFO"
    #: A folder of workflow YAML files loaded besides the shipped ones: ``OMOI_WORKFLOWS_DIR``.
    workflows_dir: str = ""
    #: Characters of earlier phases' summary handed to the next: ``OMOI_CONTEXT_BUDGET``.
    context_budget: int = 4000
    #: Requests per token, Flask-Limiter syntax (empty: none): ``OMOI_RATE_LIMIT``.
    rate_limit: str = "100/second"
    #: Requests without a valid token per address: ``OMOI_UNAUTHENTICATED_RATE_LIMIT``.
    unauthenticated_rate_limit: str = "10/second"
    #: Event streams one token may hold per API process: ``OMOI_MAX_STREAMS_PER_TOKEN``.
    max_streams_per_token: int = 20
    #: A secret the API makes an admin token at start (containers): ``OMOI_BOOTSTRAP_TOKEN``.
    bootstrap_token: str = ""
    #: The token the CLI sends (else the one ``omoi up`` saved): ``OMOI_TOKEN``.
    token: str = ""
    #: Seconds a board sign-in lasts: ``OMOI_BOARD_SESSION_LIFETIME``.
    board_session_lifetime: float = 12 * 3600.0
    #: Seconds of silence after which the agents page hides a dead agent:
    #: ``OMOI_BOARD_HIDE_OFFLINE_AFTER``.
    board_hide_offline_after: float = 3600.0
    #: Proxies in front of the API whose ``X-Forwarded-*`` to believe: ``OMOI_TRUSTED_PROXIES``.
    trusted_proxies: int = 0
    #: The event relay's pub/sub channel prefix (see ``relay_channel``): ``OMOI_EVENTS_CHANNEL``.
    events_channel: str = ""
    #: A name ``/healthz`` reports (``omoi up`` knows its API by it): ``OMOI_INSTANCE_ID``.
    instance_id: str = ""
    #: What the ``http`` handler may reach besides public addresses: ``OMOI_HTTP_ALLOW``.
    http_allow: tuple[Allowance, ...] = ()
    #: The longest response body the ``http`` handler reads: ``OMOI_HTTP_MAX_BYTES``.
    http_max_bytes: int = 1024 * 1024
    #: Exec task types this worker runs (``omoi worker --enable``): ``OMOI_ENABLE_TASK_TYPES``.
    enable_task_types: tuple[str, ...] = ()
    #: The operator's own task types that run code (alike everywhere): ``OMOI_EXEC_TASK_TYPES``.
    exec_task_types: tuple[str, ...] = ()
    #: Variables a shell command gets besides the basics (never ``OMOI_*``): ``OMOI_SHELL_ENV``.
    shell_env: tuple[str, ...] = ()
    #: Lines an attempt's log keeps; then one truncation marker: ``OMOI_LOG_MAX_LINES``.
    log_max_lines: int = 10_000
    #: Characters a log line keeps (longer ones are cut): ``OMOI_LOG_MAX_LINE_CHARS``.
    log_max_line_chars: int = 4096
    #: Seconds task log lines are kept before beat deletes them: ``OMOI_LOG_RETENTION``.
    log_retention: float = 7 * 24 * 3600.0
    #: Seconds a finished ticket is kept after its last change, then beat deletes it with
    #: its tasks and events; 0 (the default) keeps every ticket: ``OMOI_TICKET_RETENTION``.
    ticket_retention: float = 0.0
    #: A folder where each deleted ticket is first archived as a JSON line (none: not
    #: archived): ``OMOI_TICKET_ARCHIVE_DIR``.
    ticket_archive_dir: str = ""

    def __post_init__(self) -> None:
        unknown = [t for t in self.enable_task_types if t not in self.exec_types]
        if unknown:
            raise ValueError(
                f"OMOI_ENABLE_TASK_TYPES names {unknown[0]!r}, which is not an exec task type "
                f"({', '.join(sorted(self.exec_types))}; OMOI_EXEC_TASK_TYPES marks more)"
            )
        internal = [n for n in self.shell_env if n.upper().startswith("OMOI_")]
        if internal:
            raise ValueError(f"OMOI_SHELL_ENV may not pass omoi's own settings ({internal[0]})")
        if self.log_max_lines < 1 or self.log_max_line_chars < 1 or self.log_retention <= 0:
            raise ValueError(
                "OMOI_LOG_MAX_LINES and OMOI_LOG_MAX_LINE_CHARS must be at least 1, "
                "OMOI_LOG_RETENTION above 0"
            )
        if self.ticket_retention < 0:
            raise ValueError("OMOI_TICKET_RETENTION is seconds, 0 (keep every ticket) or more")

    @property
    def exec_types(self) -> frozenset[str]:
        """Task types whose payload is code: submitting one needs ``exec``, and only workers
        that enabled the type run it."""
        return exec_types(self.exec_task_types)

    @property
    def ticket_archive(self) -> Path | None:
        """Where deleted tickets are archived, or None."""
        return Path(self.ticket_archive_dir) if self.ticket_archive_dir else None

    @property
    def token_file(self) -> Path:
        """Where ``omoi up`` saves the local admin token, and the CLI looks for it."""
        return self.data_dir / "token"

    @property
    def client_url(self) -> str:
        """Where the CLI finds the API: ``OMOI_API_URL``, else the local host and port."""
        return self.api_url or f"http://{self.api_host}:{self.api_port}"

    @property
    def relay_channel(self) -> str:
        """The pub/sub channel prefix of the event relay: ``OMOI_EVENTS_CHANNEL``, else
        ``omoi.events.db<N>`` for the broker's database N. Redis pub/sub ignores database
        numbers, so deployments sharing a Redis server on different databases would otherwise
        hear each other's events."""
        return self.events_channel or f"omoi.events.db{_redis_db(self.broker_url)}"

    @property
    def log_channel(self) -> str:
        """The pub/sub channel on which writers of task logs wake the API's followers: the
        relay's prefix (so deployments apart stay apart) and ``:logs``, which no subscriber
        of the relay's ``<prefix>.*`` channels hears."""
        return f"{self.relay_channel}:logs"

    @property
    def work_channel(self) -> str:
        """The pub/sub channel on which a commit that made an external agent's task ready
        wakes the API's long-polling claims (the relay's prefix and ``:work``)."""
        return f"{self.relay_channel}:work"

    @property
    def embedded(self) -> bool:
        return self.database_url.startswith("sqlite")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        data_dir = _data_dir(env)
        values: dict[str, object] = {
            "data_dir": data_dir,
            "database_url": env.get("OMOI_DATABASE_URL", f"sqlite:///{data_dir / 'omoi.sqlite'}"),
            "broker_url": env.get(
                "OMOI_BROKER_URL", f"omoi-sqla+sqlite:///{data_dir / 'broker.sqlite'}"
            ),
        }
        try:
            values["http_allow"] = parse_allowlist(env.get("OMOI_HTTP_ALLOW", ""))
        except ValueError as exc:
            raise ValueError(f"OMOI_HTTP_ALLOW: {exc}") from exc
        for f in fields(cls):
            key = f"OMOI_{f.name.upper()}"
            if f.name in values or key not in env:
                continue
            if str(f.type) == LIST:
                values[f.name] = tuple(v.strip() for v in env[key].split(",") if v.strip())
                continue
            caster = {"float": float, "int": int, "str": str}.get(str(f.type))
            if caster is not None:
                try:
                    values[f.name] = caster(env[key])
                except ValueError as exc:
                    raise ValueError(f"{key}={env[key]!r} is not a valid {f.type}") from exc
        return cls(**values)  # type: ignore[arg-type]
