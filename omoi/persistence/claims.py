"""The claim, both forms side by side: a task goes queued (or retrying, once its wait is over)
→ running under a fresh lease, with its ``task.started`` event. A worker claims the task its
message names (``claim``); an external agent pulls the next task it may take (``claim_next``).

On PostgreSQL each runs as one autocommit round trip, a data-modifying CTE; on the embedded
SQLite the same steps run as a multi-statement transaction. A change to one form is made to
the other here too: the tests run the first on PostgreSQL and the second on the default.

Dependents are found by the GIN index alone, as in ``statements.dependents`` (which says why).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection, and_, bindparam, literal_column, or_, select, update

from omoi.domain.enums import AgentKind, AgentStatus, Priority, TaskStatus
from omoi.domain.events import EventType
from omoi.domain.routing import DEFAULT_CAPABILITY, external_routes
from omoi.persistence.db import Database
from omoi.persistence.statements import (
    ACTOR,
    EVENT_COLUMNS,
    LIVE_AGENTS,
    as_sql,
    by_dialect,
    pg_fetch,
    record,
    task_event,
    tasks,
)
from omoi.persistence.tables import PRIORITY_RANK, Agent

agents = Agent.__table__
LIVE_STATUSES = "(" + ", ".join(f"'{s}'" for s in LIVE_AGENTS) + ")"

# What a claim returns of the task it took: what its ``TaskContext`` is made of.
CLAIMED_COLUMNS = (
    tasks.c.ticket_id,
    tasks.c.key,
    tasks.c.task_type,
    tasks.c.payload,
    tasks.c.timeout_seconds,
    tasks.c.dependencies,
    tasks.c.resources,
)
_CLAIMED = ", ".join(c.name for c in CLAIMED_COLUMNS)


def claimable(now: Any) -> Any:
    """A task its claim may take: queued, or retrying once its wait is over at ``now``."""
    return or_(
        tasks.c.status == TaskStatus.QUEUED,
        and_(tasks.c.status == TaskStatus.RETRYING, tasks.c.next_attempt_at <= now),
    )


# -- a worker's claim of the task its message names ------------------------------------------

CLAIM_PG = f"""
WITH claimed AS (
    UPDATE tasks
       SET status = '{TaskStatus.RUNNING}', lease_token = %(lease)s, started_at = %(now)s,
           celery_id = %(message)s, agent_id = %(agent)s
     WHERE id = %(id)s AND attempt = %(attempt)s
       AND ({as_sql(claimable(literal_column("%(now)s")))})
 RETURNING id, {_CLAIMED}
), started AS (
    INSERT INTO events ({EVENT_COLUMNS})
    SELECT '{EventType.TASK_STARTED}', 'task', id, ticket_id,
           jsonb_build_object('attempt', %(attempt)s, 'agent_id', %(agent)s::text), %(now)s,
           {ACTOR}
      FROM claimed
)
SELECT {_CLAIMED}
  FROM claimed
"""

# the Core statement's parameters carry a prefix: they may not shadow its columns
CLAIM = (
    update(tasks)
    .where(
        tasks.c.id == bindparam("b_id"),
        tasks.c.attempt == bindparam("b_attempt"),
        claimable(bindparam("b_now")),
    )
    .values(
        status=TaskStatus.RUNNING,
        lease_token=bindparam("b_lease"),
        started_at=bindparam("b_now"),
        celery_id=bindparam("b_message"),
        agent_id=bindparam("b_agent"),
    )
    .returning(*CLAIMED_COLUMNS)
)


def claim(db: Database, params: dict[str, Any]) -> Any:
    """The claimed row (``CLAIMED_COLUMNS``), or None when the task is not claimable at this
    attempt. ``params``: id, attempt, lease, now, message (the Celery id), agent."""
    # Committed without waiting for the WAL flush (one fsync less per task). Only a PostgreSQL
    # crash can lose it, and then the task is `queued` again at this attempt: the attempt's
    # result is refused by the lease guard, any later durable commit would have flushed the
    # claim first (so no cancel or result can follow a lost claim), and the outbox sweep
    # re-publishes what was published before the restart.
    return by_dialect(db, claim_postgres, claim_portable, params, durable=False)


def claim_postgres(pg: Any, params: dict[str, Any]) -> Any:
    rows = pg_fetch(pg, CLAIM_PG, params)
    return rows[0] if rows else None


def claim_portable(conn: Connection, params: dict[str, Any]) -> Any:
    row = conn.execute(CLAIM, {f"b_{k}": v for k, v in params.items()}).one_or_none()
    if row is not None:
        agent = params["agent"]
        event = task_event(
            EventType.TASK_STARTED,
            params["id"],
            row.ticket_id,
            {"attempt": params["attempt"], "agent_id": str(agent) if agent else None},
            params["now"],
        )
        record(conn, [event])
    return row


# -- an external agent's pull of the next task it may take -----------------------------------


def _takes(pair: str) -> str:
    """A queued task ``t`` the agent may take, on the (external, route) pair ``pair``."""
    return f"""t.status = '{TaskStatus.QUEUED}'
           AND t.external = {pair}.external AND t.route = {pair}.route
           AND t.capabilities <@ (SELECT capabilities FROM me)"""


# Each (external, route) the agent may take has its first task found by an ordered index scan
# (``heads``); in that order, the first pair's first task that no other claim holds is locked
# and taken (``picked``). The executor stops at the first pair that yields one, so a claim locks
# only the task it takes: a concurrent claimer is never left without a task a lock held back.
CLAIM_NEXT_PG = f"""
WITH me AS (
    SELECT capabilities, status FROM agents WHERE id = %(agent)s
), served AS (
    SELECT coalesce(array_agg(DISTINCT c), '{{}}') AS caps
      FROM agents AS a, unnest(a.capabilities || ARRAY['{DEFAULT_CAPABILITY}']) AS c
     WHERE a.kind = '{AgentKind.CELERY}' AND a.status IN {LIVE_STATUSES}
), routes AS (
    SELECT DISTINCT x.external, r.route
      FROM me, unnest(me.capabilities || ARRAY['{DEFAULT_CAPABILITY}']) AS r(route),
           (VALUES (true), (false)) AS x(external)
     WHERE me.status <> '{AgentStatus.OFFLINE}'
       AND (x.external OR NOT r.route = ANY ((SELECT caps FROM served)::text[]))
), heads AS (
    SELECT routes.*, head.rank, head.queued_at FROM routes, LATERAL (
        SELECT {PRIORITY_RANK} AS rank, t.queued_at FROM tasks AS t
         WHERE {_takes("routes")}
         ORDER BY {PRIORITY_RANK}, t.queued_at
         LIMIT 1
    ) AS head
), picked AS (
    SELECT task.id FROM (SELECT * FROM heads ORDER BY rank, queued_at) AS h, LATERAL (
        SELECT t.id FROM tasks AS t
         WHERE {_takes("h")}
         ORDER BY {PRIORITY_RANK}, t.queued_at
         LIMIT 1
           FOR UPDATE OF t SKIP LOCKED
    ) AS task
     ORDER BY h.rank, h.queued_at
     LIMIT 1
), claimed AS (
    UPDATE tasks
       SET status = '{TaskStatus.RUNNING}', lease_token = %(lease)s, started_at = %(now)s,
           agent_id = %(agent)s, celery_id = NULL
      FROM picked WHERE tasks.id = picked.id
 RETURNING tasks.id, tasks.attempt, {", ".join(f"tasks.{c.name}" for c in CLAIMED_COLUMNS)},
           (SELECT context FROM tickets WHERE tickets.id = tasks.ticket_id) AS ticket_context
), started AS (
    INSERT INTO events ({EVENT_COLUMNS})
    SELECT '{EventType.TASK_STARTED}', 'task', id, ticket_id,
           jsonb_build_object('attempt', attempt, 'agent_id', %(agent)s::text), %(now)s,
           {ACTOR}
      FROM claimed
), busy AS (
    UPDATE agents SET last_heartbeat = %(now)s, status = '{AgentStatus.BUSY}'
     WHERE id = %(agent)s AND EXISTS (SELECT 1 FROM claimed)
)
SELECT (SELECT status FROM me) AS agent_status, c.*
  FROM (SELECT 1) AS one LEFT JOIN claimed AS c ON true
"""


def claim_next(db: Database, params: dict[str, Any]) -> Any:
    """One row: ``agent_status`` (None for an unknown agent), and the claimed task's id,
    attempt and ``CLAIMED_COLUMNS`` (``id`` None when nothing was claimed: the agent is
    unknown or offline, or nothing is claimable). ``params``: agent, lease, now."""

    return by_dialect(db, claim_next_postgres, claim_next_portable, params)


def claim_next_postgres(pg: Any, params: dict[str, Any]) -> Any:
    return pg_fetch(pg, CLAIM_NEXT_PG, params)[0]


def claim_next_portable(conn: Connection, params: dict[str, Any]) -> Any:
    agent_id, now = params["agent"], params["now"]
    agent = conn.execute(
        select(agents.c.capabilities, agents.c.status).where(agents.c.id == agent_id)
    ).one_or_none()
    if agent is None or agent.status == AgentStatus.OFFLINE:
        return SimpleNamespace(agent_status=agent.status if agent else None, id=None)
    picked = _pick(conn, set(agent.capabilities), _celery_capabilities(conn))
    if picked is None:
        return SimpleNamespace(agent_status=agent.status, id=None)
    row = conn.execute(
        CLAIM,
        {
            "b_id": picked.id,
            "b_attempt": picked.attempt,
            "b_lease": params["lease"],
            "b_now": now,
            "b_agent": agent_id,
            "b_message": None,
        },
    ).one()
    record(
        conn,
        [
            task_event(
                EventType.TASK_STARTED,
                picked.id,
                row.ticket_id,
                {"attempt": picked.attempt, "agent_id": str(agent_id)},
                now,
            )
        ],
    )
    conn.execute(
        update(agents)
        .where(agents.c.id == agent_id)
        .values(last_heartbeat=now, status=AgentStatus.BUSY)
    )
    return SimpleNamespace(
        agent_status=agent.status, id=picked.id, attempt=picked.attempt, **row._asdict()
    )


def _celery_capabilities(conn: Connection) -> set[str]:
    """What the live Celery workers serve (``served`` in ``CLAIM_NEXT_PG``)."""
    rows = list(
        conn.execute(
            select(agents.c.capabilities).where(
                agents.c.kind == AgentKind.CELERY, agents.c.status.in_(LIVE_AGENTS)
            )
        ).scalars()
    )
    served = {DEFAULT_CAPABILITY} if rows else set()  # every omoi worker serves cap.default
    for caps in rows:
        served.update(caps)
    return served


def _pick(conn: Connection, caps: set[str], celery: set[str]) -> Any:
    """SQLite's claim choice (``heads`` and ``picked`` in ``CLAIM_NEXT_PG``): the head of each
    (external, route) the agent may take, in claim order, then the first of those."""
    columns = (
        tasks.c.id,
        tasks.c.attempt,
        tasks.c.capabilities,
        tasks.c.priority,
        tasks.c.queued_at,
    )
    heads = []
    for external, route in external_routes(caps, celery):
        query = (
            select(*columns)
            .where(
                tasks.c.status == TaskStatus.QUEUED,
                tasks.c.external == external,
                tasks.c.route == route,
            )
            .order_by(PRIORITY_RANK, tasks.c.queued_at)
        )
        with conn.execute(query) as candidates:  # closed once the first that fits is read
            heads += [next((t for t in candidates if set(t.capabilities) <= caps), None)]
    return min(
        (h for h in heads if h is not None),
        key=lambda h: (Priority(h.priority).rank, h.queued_at),
        default=None,
    )
