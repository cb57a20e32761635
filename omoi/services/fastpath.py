"""PostgreSQL single-statement forms of the two per-task transactions.

Each runs as one autocommit round trip: a data-modifying CTE changes the task, appends its
events and (for success) releases dependents and decrements the ticket's open-task counter.
They do exactly what the portable multi-statement code in ``execution`` does on SQLite; the
tests run this form on PostgreSQL and the portable one on the embedded default.

Dependents are found by the GIN index alone, as in ``sql.dependents`` (which says why).
"""

from __future__ import annotations

from typing import Any

from psycopg.rows import namedtuple_row
from psycopg.types.json import Jsonb

from omoi.domain.enums import AgentKind, AgentStatus, TaskStatus
from omoi.domain.events import EventType
from omoi.domain.routing import DEFAULT_CAPABILITY
from omoi.persistence.tables import PRIORITY_RANK
from omoi.services import actors

EVENT_COLUMNS = (
    "type, entity_type, entity_id, ticket_id, payload, created_at, actor_token_id, actor_name"
)
# the actor of the request that runs the statement (an external agent's claim or result)
ACTOR = "%(actor_token_id)s::uuid, %(actor_name)s::text"
LIVE_STATUSES = f"('{AgentStatus.IDLE}', '{AgentStatus.BUSY}')"

CLAIM = f"""
WITH claimed AS (
    UPDATE tasks
       SET status = '{TaskStatus.RUNNING}', lease_token = %(lease)s, started_at = %(now)s,
           celery_id = %(message)s, agent_id = %(agent)s
     WHERE id = %(id)s AND attempt = %(attempt)s
       AND (status = '{TaskStatus.QUEUED}'
            OR (status = '{TaskStatus.RETRYING}' AND next_attempt_at <= %(now)s))
 RETURNING id, ticket_id, key, task_type, payload, timeout_seconds, dependencies, resources
), started AS (
    INSERT INTO events ({EVENT_COLUMNS})
    SELECT '{EventType.TASK_STARTED}', 'task', id, ticket_id,
           jsonb_build_object('attempt', %(attempt)s), %(now)s, {ACTOR}
      FROM claimed
)
SELECT ticket_id, key, task_type, payload, timeout_seconds, dependencies, resources
  FROM claimed
"""

SUCCEED = f"""
WITH finished AS (
    UPDATE tasks
       SET status = '{TaskStatus.SUCCEEDED}', result = %(result)s, error = NULL,
           finished_at = %(now)s, lease_token = NULL
     WHERE id = %(id)s AND status = '{TaskStatus.RUNNING}' AND lease_token = %(lease)s
 RETURNING id
), released AS (
    UPDATE tasks
       SET unmet_dependencies = unmet_dependencies - 1,
           status = CASE WHEN unmet_dependencies = 1 THEN '{TaskStatus.QUEUED}' ELSE status END,
           attempt = CASE WHEN unmet_dependencies = 1 THEN attempt + 1 ELSE attempt END,
           queued_at = CASE WHEN unmet_dependencies = 1 THEN %(now)s ELSE queued_at END
     WHERE status = '{TaskStatus.PENDING}' AND dependencies @> %(needle)s
       AND EXISTS (SELECT 1 FROM finished)
 RETURNING id, status, attempt, capabilities, priority, timeout_seconds, external, task_type
), logged AS (
    INSERT INTO events ({EVENT_COLUMNS})
    SELECT '{EventType.TASK_SUCCEEDED}', 'task', id, %(ticket)s,
           jsonb_build_object('attempt', %(attempt)s), %(now)s, {ACTOR} FROM finished
    UNION ALL
    SELECT '{EventType.TASK_QUEUED}', 'task', id, %(ticket)s,
           jsonb_build_object('attempt', attempt), %(now)s, {ACTOR}
      FROM released WHERE status = '{TaskStatus.QUEUED}'
    UNION ALL
    SELECT '{EventType.TASK_SUPERSEDED}', 'task', %(id)s, %(ticket)s,
           jsonb_build_object('attempt', %(attempt)s), %(now)s, {ACTOR}
     WHERE NOT EXISTS (SELECT 1 FROM finished)
), counted AS (
    UPDATE tickets SET open_tasks = open_tasks - 1, updated_at = %(now)s
     WHERE id = %(ticket)s AND EXISTS (SELECT 1 FROM finished)
 RETURNING open_tasks
)
SELECT (SELECT count(*) FROM finished) AS landed,
       (SELECT open_tasks FROM counted) AS open_tasks,
       r.id, r.status, r.attempt, r.capabilities, r.priority, r.timeout_seconds, r.external,
       r.task_type
  FROM (SELECT 1) AS one LEFT JOIN released AS r ON r.status = '{TaskStatus.QUEUED}'
"""


STAMP = "UPDATE tasks SET published_at = %(now)s WHERE id = ANY(%(ids)s) AND attempt = %(attempt)s"


def stamp(pg: Any, params: dict[str, Any]) -> None:
    pg.execute(STAMP, params)


def claim(pg: Any, params: dict[str, Any]) -> Any:
    """The claimed row, or None when the task is not queued at this attempt."""
    with pg.cursor(row_factory=namedtuple_row) as cur:
        return cur.execute(CLAIM, {**params, **actors.columns()}).fetchone()


def succeed(pg: Any, params: dict[str, Any]) -> list[Any]:
    """One row per dependent made ready (``id`` NULL when none), each carrying ``landed`` and
    the ticket's remaining ``open_tasks``."""
    params = {
        **params,
        **actors.columns(),
        "result": Jsonb(params["result"]),
        "needle": Jsonb(params["needle"]),
    }
    with pg.cursor(row_factory=namedtuple_row) as cur:
        return cur.execute(SUCCEED, params).fetchall()


def _takes(pair: str) -> str:
    """A queued task ``t`` the agent may take, on the (external, route) pair ``pair``."""
    return f"""t.status = '{TaskStatus.QUEUED}'
           AND t.external = {pair}.external AND t.route = {pair}.route
           AND t.capabilities <@ (SELECT capabilities FROM me)"""


# Each (external, route) the agent may take has its first task found by an ordered index scan
# (``heads``); in that order, the first pair's first task that no other claim holds is locked
# and taken (``picked``). The executor stops at the first pair that yields one, so a claim locks
# only the task it takes: a concurrent claimer is never left without a task a lock held back.
CLAIM_NEXT = f"""
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
 RETURNING tasks.id, tasks.ticket_id, tasks.key, tasks.task_type, tasks.payload,
           tasks.timeout_seconds, tasks.dependencies, tasks.attempt, tasks.resources,
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


def claim_next(pg: Any, params: dict[str, Any]) -> Any:
    """One row: ``agent_status`` (NULL for an unknown agent) and the claimed task's columns
    (NULL when nothing is claimable)."""
    with pg.cursor(row_factory=namedtuple_row) as cur:
        return cur.execute(CLAIM_NEXT, {**params, **actors.columns()}).fetchone()
