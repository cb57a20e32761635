"""PostgreSQL single-statement forms of the two per-task transactions.

Each runs as one autocommit round trip: a data-modifying CTE changes the task, appends its
events and (for success) releases dependents and decrements the ticket's open-task counter.
They do exactly what the portable multi-statement code in ``execution`` does on SQLite; the
tests run this form on PostgreSQL and the portable one on the embedded default.
"""

from __future__ import annotations

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import JSONB

from omoi.domain.enums import TaskStatus
from omoi.domain.events import EventType

EVENT_COLUMNS = "type, entity_type, entity_id, ticket_id, payload, created_at"

CLAIM = text(f"""
WITH claimed AS (
    UPDATE tasks
       SET status = '{TaskStatus.RUNNING}', lease_token = :lease, started_at = :now,
           celery_id = :message
     WHERE id = :id AND status = '{TaskStatus.QUEUED}' AND attempt = :attempt
 RETURNING id, ticket_id, key, task_type, payload, timeout_seconds, dependencies
), started AS (
    INSERT INTO events ({EVENT_COLUMNS})
    SELECT '{EventType.TASK_STARTED}', 'task', id, ticket_id,
           jsonb_build_object('attempt', :attempt), :now
      FROM claimed
)
SELECT ticket_id, key, task_type, payload, timeout_seconds, dependencies FROM claimed
""")

SUCCEED = text(f"""
WITH finished AS (
    UPDATE tasks
       SET status = '{TaskStatus.SUCCEEDED}', result = :result, error = NULL,
           finished_at = :now, lease_token = NULL
     WHERE id = :id AND status = '{TaskStatus.RUNNING}' AND lease_token = :lease
 RETURNING id
), released AS (
    UPDATE tasks
       SET unmet_dependencies = unmet_dependencies - 1,
           status = CASE WHEN unmet_dependencies = 1 THEN '{TaskStatus.QUEUED}' ELSE status END,
           attempt = CASE WHEN unmet_dependencies = 1 THEN attempt + 1 ELSE attempt END,
           queued_at = CASE WHEN unmet_dependencies = 1 THEN :now ELSE queued_at END
     WHERE ticket_id = :ticket AND status = '{TaskStatus.PENDING}'
       AND dependencies @> :needle AND EXISTS (SELECT 1 FROM finished)
 RETURNING id, status, attempt, capabilities, priority, timeout_seconds
), logged AS (
    INSERT INTO events ({EVENT_COLUMNS})
    SELECT '{EventType.TASK_SUCCEEDED}', 'task', id, :ticket,
           jsonb_build_object('attempt', :attempt), :now FROM finished
    UNION ALL
    SELECT '{EventType.TASK_QUEUED}', 'task', id, :ticket,
           jsonb_build_object('attempt', attempt), :now
      FROM released WHERE status = '{TaskStatus.QUEUED}'
    UNION ALL
    SELECT '{EventType.TASK_SUPERSEDED}', 'task', :id, :ticket,
           jsonb_build_object('attempt', :attempt), :now
     WHERE NOT EXISTS (SELECT 1 FROM finished)
), counted AS (
    UPDATE tickets SET open_tasks = open_tasks - 1, updated_at = :now
     WHERE id = :ticket AND EXISTS (SELECT 1 FROM finished)
 RETURNING open_tasks
)
SELECT (SELECT count(*) FROM finished) AS landed,
       (SELECT open_tasks FROM counted) AS open_tasks,
       r.id, r.status, r.attempt, r.capabilities, r.priority, r.timeout_seconds
  FROM (SELECT 1) AS one LEFT JOIN released AS r ON r.status = '{TaskStatus.QUEUED}'
""").bindparams(bindparam("result", type_=JSONB), bindparam("needle", type_=JSONB))
