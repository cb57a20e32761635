"""``TaskContext``: the handler-facing API, what a handler sees of the attempt it runs.

A handler is a function of one ``TaskContext`` that returns a JSON result (``Handler``). The
context is made by the claim that starts the attempt: a Celery worker's
(``attempts.claim``) or an external agent's (``external_agents.claim_next``, whose fields the API
hands back as the claim's body). Everything it reads or writes goes through the lease the
claim took, so an attempt that no longer owns its task changes nothing."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from sqlalchemy import select

from omoi.domain.auth import BUILTIN_EXEC_TYPES
from omoi.domain.enums import MessageType
from omoi.persistence.statements import LEASE_OF, tasks, tickets
from omoi.services import messaging, splits
from omoi.services.logs import AttemptLog
from omoi.services.phases import emit_artifact
from omoi.services.unit_of_work import UnitOfWork


@dataclass
class TaskContext:
    """What a handler sees of its task. Handlers return a JSON-serializable result.
    Dependency results and the ticket's context are read on first use."""

    #: The task's id: the same for every attempt of the task. Set by the claim. A handler
    #: names it in what it logs or reports; to make an effect happen once, use
    #: :attr:`idempotency_key`, which is derived from it.
    task_id: uuid.UUID

    #: The id of the ticket the task belongs to. Set by the claim. A handler reads what the
    #: ticket's earlier phases concluded through :attr:`ticket_context` rather than by id.
    ticket_id: uuid.UUID

    #: The task's key, unique within its ticket: as submitted or as the workflow template
    #: names it (``<task>/<key>`` for a split's subtasks, ``#<n>`` appended when a phase is
    #: entered again).
    #: Set by the claim. Dependents find this task's result under it in their
    #: :attr:`dependency_results`.
    key: str

    #: The task type, which named this handler (``@handler("word-count")``). Set by the
    #: claim; the worker resolved the handler by it. A handler registered for several types
    #: reads it to tell them apart.
    task_type: str

    #: The attempt number: 1 on the task's first run, one more each time it is queued again
    #: (a retry, a hand-back by a stopping worker, a lost attempt recovered). Set by the claim,
    #: from the message (``<task_id>:<attempt>``); only this attempt's result is recorded. A
    #: handler may read it to act differently on a retry.
    attempt: int

    #: The task's payload as submitted (a JSON object): the handler's input. Set by the claim.
    #: A handler validates what it needs and raises ``PermanentError`` when it is missing.
    payload: dict[str, Any]

    #: The attempt's soft time limit in seconds, or ``None`` for none. Set by the claim from
    #: the task's ``timeout_seconds``. On a Celery worker, ``SoftTimeLimitExceeded`` is raised
    #: in the handler once it passes, and the hard limit kills the attempt
    #: ``OMOI_TIME_LIMIT_GRACE`` seconds later; a handler that runs long checks it to pace
    #: itself. An external agent enforces it itself.
    timeout_seconds: float | None

    #: The ids (as strings) of the tasks this one depends on. Set by the claim from the
    #: task's dependencies. A handler reads their results through
    #: :attr:`dependency_results` instead; this list is what those reads look up.
    depends_on: list[str] = field(default_factory=list)

    #: The agent running the attempt: the Celery worker's registered agent, or the external
    #: agent that claimed it; ``None`` when the attempt runs without a registration. Set by
    #: the claim. :meth:`send_message` sends as this agent and :meth:`inbox` reads its
    #: messages.
    agent_id: uuid.UUID | None = None

    #: The resources the task declared (``"repo:main"`` exclusive, ``"repo:main:shared"``
    #: shared). Set by the claim. The attempt runs only while it holds every one of them
    #: (taken right after the claim, released when the attempt ends).
    resources: list[str] = field(default_factory=list)

    #: ``{resource: fencing token}`` of the locks this attempt holds, the token increasing
    #: with each exclusive acquisition of the resource. Set once the locks are taken, after
    #: the claim and before the handler runs (empty for a task without resources). A handler
    #: hands the token to the system the lock protects, which refuses a smaller one.
    locks: dict[str, int] = field(default_factory=dict)  # resource → fencing token

    #: The task types that run code (``shell``, ``http`` and ``OMOI_EXEC_TASK_TYPES``) as the
    #: worker's settings mark them. Set by the worker right after the claim (the built-in
    #: ones otherwise). :meth:`split` consults it: only a task of one of these types may
    #: split into tasks of these types.
    exec_types: frozenset[str] = BUILTIN_EXEC_TYPES  # the worker's: what a split may add

    #: The unit of work the context reads and writes through (and :meth:`split` publishes
    #: through). Set by the claim; ``None`` in a context made by hand (a unit test), where
    #: the reads return nothing. Not for handlers.
    _uow: UnitOfWork | None = field(default=None, repr=False)

    #: The lease the claim took, which every write of the attempt is guarded by. Set by the
    #: claim. Handlers read it as :attr:`lease`.
    _lease: uuid.UUID | None = field(default=None, repr=False)

    #: The attempt's log, which :meth:`log` writes to. Set by the worker for the handler's
    #: run (and closed, its last lines stored, before the result commits); ``None`` for an
    #: external agent's claim, whose agent posts its lines over HTTP, and in a context made
    #: by hand, where :meth:`log` writes nothing. Not for handlers.
    _log: AttemptLog | None = field(default=None, repr=False)

    @classmethod
    def of_claim(
        cls,
        row: Any,
        task_id: uuid.UUID,
        attempt: int,
        agent_id: Any,
        uow: UnitOfWork,
        lease: uuid.UUID,
    ) -> TaskContext:
        """The context of a claimed task, from the claim's row (a worker's or an agent's)."""
        return cls(
            task_id=task_id,
            ticket_id=row.ticket_id,
            key=row.key,
            task_type=row.task_type,
            attempt=attempt,
            payload=row.payload,
            timeout_seconds=row.timeout_seconds,
            depends_on=row.dependencies.get("depends_on", []),
            agent_id=agent_id,
            resources=list(row.resources or []),
            _uow=uow,
            _lease=lease,
        )

    @property
    def idempotency_key(self) -> str:
        """The same for every attempt of this task, and for no other task: omoi runs a task at
        least once (a worker killed between its side effect and the commit of its result runs
        it again), so pass this to whatever the handler changes, as its dedupe key, to make the
        effect happen once."""
        return f"omoi-task-{self.task_id}"

    @cached_property
    def _dependencies(self) -> list[Any]:
        """The rows of the tasks in :attr:`depends_on` (key, result, finished_at), read once,
        on first use of :attr:`dependency_results` or :attr:`dependency_finished`."""
        if not self.depends_on or self._uow is None:
            return []
        with self._uow.db.connect() as conn:
            return list(
                conn.execute(
                    select(tasks.c.key, tasks.c.result, tasks.c.finished_at).where(
                        tasks.c.id.in_([uuid.UUID(d) for d in self.depends_on])
                    )
                )
            )

    @property
    def dependency_results(self) -> dict[str, Any]:
        """``{key: result}`` of the tasks this one depends on: read from the database on first
        use (not at the claim), then kept. A merge handler combines them; any handler reads
        its inputs from earlier tasks here."""
        return {r.key: r.result for r in self._dependencies}

    @property
    def dependency_finished(self) -> dict[str, Any]:
        """``{key: finished_at}`` of the tasks this one depends on, read with
        :attr:`dependency_results`; the ``first`` merge picks the earliest by it."""
        return {r.key: r.finished_at for r in self._dependencies}

    def split(
        self, subtasks: list[dict[str, Any]], merge: str | dict[str, Any] = "all"
    ) -> list[str]:
        """Fan out: add ``subtasks`` (task specs, keys local to this split) and a merge that
        receives their results (``"all"``, ``"first"``, ``"majority"``, or
        ``{"task_type": …}`` for a merge handler of your own). What depended on this task now
        waits for the merge. Returns the new tasks' ids."""
        assert self._uow is not None and self._lease is not None
        ready = splits.split(self._uow, self.task_id, self._lease, subtasks, merge, self.exec_types)
        return [str(d.task_id) for d in ready]

    @cached_property
    def ticket_context(self) -> dict[str, Any]:
        """The ticket's aggregated context from earlier phases: ``summary`` (every finished
        phase summarized within ``OMOI_CONTEXT_BUDGET`` characters) and, per phase, its tasks'
        summaries, decisions, risks, notes and artifact types. Read on first use (an external
        agent's claim reads it in its own statement), then kept."""
        if self._uow is None:
            return {}
        with self._uow.db.connect() as conn:
            return dict(
                conn.execute(
                    select(tickets.c.context).where(tickets.c.id == self.ticket_id)
                ).scalar_one()
            )

    def emit_artifact(self, kind: str, content: Any, path: str | None = None) -> bool:
        """Attach an artifact (a document, a report) to this task's phase for its gate to
        judge. Stored only while this attempt still holds the task; returns whether it was."""
        if self._uow is None or self._lease is None:
            return False
        with self._uow.db.connect() as conn:
            return emit_artifact(conn, self.task_id, self._lease, kind, content, path)

    def send_message(
        self,
        content: Any,
        *,
        to_agent: uuid.UUID | None = None,
        capability: str | None = None,
        broadcast: bool = False,
        type: str = "info",
        thread_id: uuid.UUID | None = None,
    ) -> Any:
        """Message another agent, every agent with a capability, or everyone, as this agent
        (:attr:`agent_id`), about this task. Returns what was sent (its ids and thread)."""
        assert self._uow is not None
        return messaging.send(
            self._uow.db,
            type=MessageType(type),
            content=content,
            sender=self.agent_id,
            to_agent=to_agent,
            capability=capability,
            broadcast=broadcast,
            thread_id=thread_id,
            task_id=self.task_id,
        )

    def inbox(self, unread_only: bool = True) -> list[Any]:
        """This agent's messages (an agent without a registration has none)."""
        if self._uow is None or self.agent_id is None:
            return []
        return messaging.inbox(self._uow.db, self.agent_id, unread_only=unread_only)

    def log(self, message: Any, stream: str = "log") -> None:
        """Add ``message`` (``str()`` of it; one line per line of it) to this attempt's log,
        which ``GET /api/v1/tasks/{id}/logs`` reads and ``omoi logs TASK --follow`` streams.
        ``stream`` is ``log``, ``stdout`` or ``stderr``. Lines are stored in batches, within
        about 0.2 s, and all of them before the result commits; past
        ``OMOI_LOG_MAX_LINES`` an attempt keeps one truncation marker and drops the rest, and
        a line is cut at ``OMOI_LOG_MAX_LINE_CHARS``. Python ``logging`` records from the
        handler's code land here too, as ``log`` lines."""
        if self._log is not None:
            self._log.write(str(message), stream)

    @property
    def lease(self) -> uuid.UUID | None:
        """The lease this attempt holds; external agents report results with it."""
        return self._lease

    def should_cancel(self) -> bool:
        """True once this attempt no longer owns the task (cancelled, or superseded): one
        read of the task's lease per call, so a long handler calls it between steps and
        returns early (its result would be refused anyway)."""
        if self._uow is None:
            return False
        with self._uow.db.connect() as conn:
            lease = conn.execute(LEASE_OF, {"b_id": self.task_id}).scalar_one_or_none()
        return lease != self._lease


#: A handler: runs one attempt of its task type and returns the result to store.
Handler = Callable[[TaskContext], Any]
