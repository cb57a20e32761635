"""Ticket endpoints."""

from __future__ import annotations

import uuid
from typing import Any

from flask import request
from flask.views import MethodView

from omoi.api.auth import principal, require_exec
from omoi.api.parsing import Blueprint
from omoi.api.runtime import runtime
from omoi.api.schemas.common import CancelIn
from omoi.api.schemas.tickets import (
    ApproveIn,
    ArtifactCreated,
    ArtifactIn,
    ArtifactPage,
    ArtifactQuery,
    ContextOut,
    GateStatus,
    HistoryList,
    PhaseProgressList,
    TicketCreated,
    TicketIn,
    TicketOut,
    TicketPage,
    TicketQuery,
    TransitionIn,
    ValidTransitions,
)
from omoi.domain.auth import Scope
from omoi.persistence import Ticket
from omoi.persistence.tables import TICKET_COLUMNS
from omoi.services import cancellation, phases, submission
from omoi.services.errors import Forbidden
from omoi.services.read import phases as phase_views
from omoi.services.read import queries
from omoi.services.submission import NewTicket

blp = Blueprint(
    "tickets",
    __name__,
    url_prefix="/api/v1/tickets",
    description="Submit tickets and follow their progress",
)


def ticket_view(ticket: Ticket, counts: dict[str, int]) -> dict[str, Any]:
    view = {c.key: getattr(ticket, c.key) for c in TICKET_COLUMNS}
    view.update(task_counts=counts, progress=round(queries.progress(counts), 4))
    return view


@blp.route("")
class Tickets(MethodView):
    @blp.arguments(TicketIn)
    @blp.response(201, TicketCreated)
    @blp.alt_response(200, schema=TicketCreated, description="Idempotent replay")
    @blp.alt_response(403, description="An exec-type task without the exec scope")
    @blp.alt_response(422, description="Invalid ticket or task graph (names the cycle)")
    def post(self, spec: NewTicket) -> Any:
        """Create a ticket and its task DAG; ``Idempotency-Key`` makes a retry safe. Tasks
        of an exec type (``shell``, ``http``, …) need the ``exec`` scope."""
        require_exec(t.task_type for t in spec.tasks)
        rt = runtime()
        key = request.headers.get("Idempotency-Key") or None
        submitted = submission.create_ticket(
            rt.uow,
            spec,
            submitter_token_id=principal().token_id,  # the key's scope
            idempotency_key=key,
            request_fingerprint=submission.fingerprint(request.get_json()) if key else None,
            max_tasks=rt.settings.max_tasks_per_ticket,
            default_max_retries=rt.settings.default_max_retries,
            context_budget=rt.settings.context_budget,
        )
        ticket, counts = queries.get_ticket(rt.db, submitted.ticket_id)
        body = ticket_view(ticket, counts)
        briefs = submitted.tasks if submitted.created else queries.task_briefs(rt.db, ticket.id)
        body["tasks"] = [{"id": i, "key": k, "status": s} for i, k, s in briefs]
        if submitted.created:
            return body
        return body, 200, {"Idempotent-Replayed": "true"}

    @blp.arguments(TicketQuery, location="query")
    @blp.response(200, TicketPage)
    @blp.alt_response(422, description="A phase no workflow (or not `workflow`) has")
    def get(self, args: dict[str, Any]) -> Any:
        """List tickets, newest first; pass ``next_cursor`` back as ``cursor``. A ``phase``
        that ``workflow`` (or, without one, every known workflow) lacks is a 422."""
        if "phase" in args:
            runtime().uow.workflows.require_phase(args["phase"], args.get("workflow"))
        page = queries.list_tickets(runtime().db, **args)
        with runtime().db.session() as session:
            counts = queries.counts_by_ticket(session, [t.id for t in page.items])
            items = [ticket_view(t, counts[t.id]) for t in page.items]
        return {"items": items, "next_cursor": page.next_cursor}


@blp.route("/<uuid:ticket_id>")
class TicketById(MethodView):
    @blp.response(200, TicketOut)
    @blp.alt_response(404, description="No such ticket")
    def get(self, ticket_id: uuid.UUID) -> Any:
        """One ticket with its task counts per status."""
        return ticket_view(*queries.get_ticket(runtime().db, ticket_id))


@blp.route("/<uuid:ticket_id>/cancel")
class CancelTicket(MethodView):
    @blp.arguments(CancelIn)
    @blp.response(200, TicketOut)
    @blp.alt_response(404, description="No such ticket")
    @blp.alt_response(409, description="The ticket is already done or cancelled")
    def post(self, body: dict[str, Any], ticket_id: uuid.UUID) -> Any:
        """Cancel the ticket and all its open tasks; running attempts are revoked."""
        rt = runtime()
        cancellation.cancel_ticket(rt.uow, ticket_id, body["reason"])
        return ticket_view(*queries.get_ticket(rt.db, ticket_id))


@blp.route("/<uuid:ticket_id>/transition")
class Transition(MethodView):
    @blp.arguments(TransitionIn)
    @blp.response(200, TicketOut)
    @blp.alt_response(409, description="Not an allowed transition; the message lists those")
    def post(self, body: dict[str, Any], ticket_id: uuid.UUID) -> Any:
        """Move a ticket to another phase (``force`` skips the transition table)."""
        rt = runtime()
        phases.move(
            rt.uow,
            ticket_id,
            body["to_phase"],
            body["reason"],
            principal().name,
            body["force"],
            body["by"],  # a note: the mover recorded is the token
        )
        return ticket_view(*queries.get_ticket(rt.db, ticket_id))


@blp.route("/<uuid:ticket_id>/valid-transitions")
class ValidTransitionsView(MethodView):
    @blp.response(200, ValidTransitions)
    def get(self, ticket_id: uuid.UUID) -> Any:
        return phase_views.valid_transitions(runtime().db, runtime().uow.workflows, ticket_id)


@blp.route("/<uuid:ticket_id>/phase-history")
class PhaseHistoryView(MethodView):
    @blp.response(200, HistoryList)
    def get(self, ticket_id: uuid.UUID) -> Any:
        queries.get_ticket(runtime().db, ticket_id)  # 404 for an unknown ticket
        return {"items": phase_views.history_of(runtime().db, ticket_id)}


@blp.route("/<uuid:ticket_id>/phase-progress")
class PhaseProgressView(MethodView):
    @blp.response(200, PhaseProgressList)
    @blp.alt_response(404, description="No such ticket")
    def get(self, ticket_id: uuid.UUID) -> Any:
        """Task counts and progress per phase, in workflow order."""
        return {"items": queries.phase_progress(runtime().db, runtime().uow.workflows, ticket_id)}


@blp.route("/<uuid:ticket_id>/gate-status")
class GateStatusView(MethodView):
    @blp.response(200, GateStatus)
    def get(self, ticket_id: uuid.UUID) -> Any:
        """What the current phase's gate requires and its latest judgement."""
        return phase_views.gate_status(runtime().db, runtime().uow.workflows, ticket_id)


@blp.route("/<uuid:ticket_id>/context")
class ContextView(MethodView):
    @blp.response(200, ContextOut)
    def get(self, ticket_id: uuid.UUID) -> Any:
        """Finished phases aggregated, and their summary within the context budget."""
        ticket, _ = queries.get_ticket(runtime().db, ticket_id)
        return {
            "ticket_id": ticket_id,
            "summary": ticket.context.get("summary"),
            "phases": ticket.context.get("phases", {}),
        }


@blp.route("/<uuid:ticket_id>/artifacts")
class Artifacts(MethodView):
    @blp.arguments(ArtifactIn)
    @blp.response(201, ArtifactCreated)
    @blp.alt_response(403, description="An agent token whose agent runs none of its tasks")
    def post(self, body: dict[str, Any], ticket_id: uuid.UUID) -> Any:
        """Add an artifact to the ticket's phase; a gate waiting for it is judged again."""
        rt = runtime()
        artifact_id = phases.add(
            rt.uow,
            ticket_id,
            body["type"],
            body["content"],
            body["path"],
            body["phase"],
            holder=_artifact_holder(),
        )
        return {"id": artifact_id}

    @blp.arguments(ArtifactQuery, location="query")
    @blp.response(200, ArtifactPage)
    @blp.alt_response(404, description="No such ticket")
    def get(self, args: dict[str, Any], ticket_id: uuid.UUID) -> Any:
        """The ticket's artifacts (of one ``phase``, or all), oldest first; pass
        ``next_cursor`` back as ``after``."""
        rows, cursor = phase_views.artifacts_of(runtime().db, ticket_id, **args)
        return {"items": rows, "next_cursor": cursor}


def _artifact_holder() -> uuid.UUID | None:
    """The agent that must hold one of the ticket's tasks: the token's, when its ``agent``
    scope alone let it here (``submit`` and ``admin`` may add to any ticket)."""
    who = principal()
    if who.scopes & {Scope.ADMIN, Scope.SUBMIT}:
        return None
    if who.agent_id is None:
        raise Forbidden(
            "this agent token has registered no agent, so it holds no task",
            code="not_ticket_holder",
        )
    return who.agent_id


@blp.route("/<uuid:ticket_id>/approve")
class Approve(MethodView):
    @blp.arguments(ApproveIn)
    @blp.response(201, TicketOut)
    def post(self, body: dict[str, Any], ticket_id: uuid.UUID) -> Any:
        """Approve the phase's gate (for gates that require a human). The approver is the
        token; a ``by`` the client sends is kept only as a note."""
        rt = runtime()
        phases.give_approval(
            rt.uow,
            ticket_id,
            principal().name,
            body["comment"],
            body["phase"],
            note=body["by"],
        )
        return ticket_view(*queries.get_ticket(rt.db, ticket_id))
