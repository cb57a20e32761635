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
    database_url: str
    broker_url: str
    data_dir: Path
    handlers: tuple[str, ...] = ()
    heartbeat_interval: float = 30.0
    heartbeat_timeout: float = 90.0
    sweep_interval: float = 5.0
    outbox_republish_age: float = 10.0
    outbox_lost_age: float = 600.0
    visibility_timeout: int = 7200
    time_limit_grace: float = 10.0
    shutdown_grace: float = 10.0
    max_body_bytes: int = 16 * 1024 * 1024
    max_tasks_per_ticket: int = 20_000
    max_json_depth: int = 32
    default_max_retries: int = 3
    retry_backoff: float = 1.0
    retry_backoff_max: float = 60.0
    retry_eta_max: float = 60.0
    db_pool_size: int = 10
    db_outage_patience: float = 300.0
    api_host: str = "127.0.0.1"
    api_port: int = 5000
    api_url: str = ""
    log_level: str = "INFO"
    workflows_dir: str = ""
    context_budget: int = 4000
    rate_limit: str = "100/second"
    unauthenticated_rate_limit: str = "10/second"
    max_streams_per_token: int = 20
    bootstrap_token: str = ""
    token: str = ""
    board_session_lifetime: float = 12 * 3600.0
    trusted_proxies: int = 0
    events_channel: str = ""
    instance_id: str = ""
    http_allow: tuple[Allowance, ...] = ()
    http_max_bytes: int = 1024 * 1024
    # exec task types (built-in shell and http, plus exec_task_types) this worker runs
    enable_task_types: tuple[str, ...] = ()
    exec_task_types: tuple[str, ...] = ()  # the operator's own types that run code
    shell_env: tuple[str, ...] = ()  # variables a shell command gets besides the basics

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

    @property
    def exec_types(self) -> frozenset[str]:
        """Task types whose payload is code: submitting one needs ``exec``, and only workers
        that enabled the type run it."""
        return exec_types(self.exec_task_types)

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
