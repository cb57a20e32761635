"""Ticket endpoints."""

from __future__ import annotations

import uuid
from typing import Any

from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint

from omoi.api.runtime import runtime
from omoi.api.schemas import (
    CancelIn,
    TicketCreated,
    TicketIn,
    TicketOut,
    TicketPage,
    TicketQuery,
)
from omoi.domain.enums import TERMINAL_TASK_STATUSES
from omoi.models import Ticket
from omoi.services import control, queries, tickets
from omoi.services.tickets import NewTicket

blp = Blueprint(
    "tickets",
    __name__,
    url_prefix="/api/v1/tickets",
    description="Submit tickets and follow their progress",
)


def ticket_view(ticket: Ticket, counts: dict[str, int]) -> dict[str, Any]:
    total = sum(counts.values())
    done = sum(n for s, n in counts.items() if s in TERMINAL_TASK_STATUSES)
    view = {c.key: getattr(ticket, c.key) for c in Ticket.__table__.columns}
    view.update(task_counts=counts, progress=round(done / total, 4) if total else 1.0)
    return view


@blp.route("")
class Tickets(MethodView):
    @blp.arguments(TicketIn)
    @blp.response(201, TicketCreated)
    @blp.alt_response(200, schema=TicketCreated, description="Idempotent replay")
    @blp.alt_response(422, description="Invalid ticket or task graph (names the cycle)")
    def post(self, spec: NewTicket) -> Any:
        """Create a ticket and its task DAG; ``Idempotency-Key`` makes a retry safe."""
        rt = runtime()
        key = request.headers.get("Idempotency-Key") or None
        submitted = tickets.create_ticket(
            rt.db,
            rt.dispatcher,
            spec,
            idempotency_key=key,
            request_fingerprint=tickets.fingerprint(request.get_json()) if key else None,
            max_tasks=rt.settings.max_tasks_per_ticket,
            default_max_retries=rt.settings.default_max_retries,
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
    def get(self, args: dict[str, Any]) -> Any:
        """List tickets, newest first; pass ``next_cursor`` back as ``cursor``."""
        page = queries.list_tickets(runtime().db, **args)
        with runtime().db.session() as session:
            items = [ticket_view(t, queries.task_counts(session, t.id)) for t in page.items]
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
        control.cancel_ticket(rt.db, rt.dispatcher, ticket_id, body["reason"])
        return ticket_view(*queries.get_ticket(rt.db, ticket_id))
