"""Agent endpoints: discovery and health for everyone, the pull protocol for external agents."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Response
from flask.views import MethodView
from flask_smorest import abort

from omoi.api import auth
from omoi.api.parsing import Blueprint
from omoi.api.runtime import runtime
from omoi.api.schemas.agents import (
    AgentHealth,
    AgentList,
    AgentOut,
    AgentQuery,
    AgentRegisterIn,
    AgentStats,
    BestFitQuery,
    ClaimList,
    ClaimOut,
    ClaimQuery,
    ClaimsQuery,
    HeartbeatIn,
    HeartbeatOut,
)
from omoi.domain.enums import AgentKind
from omoi.services import agents, external_agents
from omoi.services.context import TaskContext
from omoi.services.read import agents as agent_views
from omoi.services.read.agents import AgentView

blp = Blueprint(
    "agents",
    __name__,
    url_prefix="/api/v1/agents",
    description="Agents: registry, health, and the pull protocol for external agents",
)


def agent_view(view: AgentView) -> dict[str, Any]:
    return {
        **view.agent._asdict(),
        "running_tasks": view.running,
        "free_capacity": view.free_capacity,
    }


@blp.route("/register")
class Register(MethodView):
    @blp.arguments(AgentRegisterIn)
    @blp.response(201, AgentOut)
    def post(self, body: dict[str, Any]) -> Any:
        """Register an external agent; heartbeat at least every OMOI_HEARTBEAT_INTERVAL."""
        db = runtime().db
        agent_id = agents.register(db, kind=AgentKind.EXTERNAL, **body)
        auth.bind_registered_agent(agent_id)
        return agent_view(agent_views.get_agent(db, agent_id))


@blp.route("")
class Agents(MethodView):
    @blp.arguments(AgentQuery, location="query")
    @blp.response(200, AgentList)
    def get(self, args: dict[str, Any]) -> Any:
        """Agents, newest first; filter by capability, status and kind."""
        return {"items": [agent_view(v) for v in agent_views.list_agents(runtime().db, **args)]}


@blp.route("/best-fit")
class BestFit(MethodView):
    @blp.arguments(BestFitQuery, location="query")
    @blp.response(200, AgentOut)
    @blp.alt_response(404, description="No agent has any of these capabilities")
    def get(self, args: dict[str, Any]) -> Any:
        """The agent that covers most of the capabilities, then idle, healthy, free."""
        view = agent_views.best_fit(runtime().db, args["capabilities"].split(","))
        if view is None:
            abort(404, message=f"no agent has any of {args['capabilities']}")
        return agent_view(view)


@blp.route("/stale")
class Stale(MethodView):
    @blp.response(200, AgentList)
    def get(self) -> Any:
        """Agents that stopped heartbeating (marked stale, or overdue)."""
        rt = runtime()
        views = agent_views.stale(rt.db, rt.settings.heartbeat_timeout)
        return {"items": [agent_view(v) for v in views]}


@blp.route("/stats")
class Stats(MethodView):
    @blp.response(200, AgentStats)
    def get(self) -> Any:
        """Counts by status and kind, live capacity and its use."""
        return agent_views.statistics(runtime().db)


@blp.route("/<uuid:agent_id>")
class AgentById(MethodView):
    @blp.response(200, AgentOut)
    @blp.alt_response(404, description="No such agent")
    def get(self, agent_id: uuid.UUID) -> Any:
        return agent_view(agent_views.get_agent(runtime().db, agent_id))


@blp.route("/<uuid:agent_id>/health")
class Health(MethodView):
    @blp.response(200, AgentHealth)
    @blp.alt_response(404, description="No such agent")
    def get(self, agent_id: uuid.UUID) -> Any:
        rt = runtime()
        return agent_views.health(rt.db, agent_id, rt.settings.heartbeat_timeout)


@blp.route("/<uuid:agent_id>/heartbeat")
class Heartbeat(MethodView):
    @blp.arguments(HeartbeatIn)
    @blp.response(200, HeartbeatOut)
    @blp.alt_response(404, description="No such agent")
    def post(self, body: dict[str, Any], agent_id: uuid.UUID) -> Any:
        """Liveness; keeps this agent's running tasks (those in ``running``, if it reports
        them) from being recovered as lost."""
        status = agents.heartbeat(runtime().db, agent_id, body["running"])
        return {"agent_id": agent_id, "status": status}


def claimed(agent_id: uuid.UUID, most: int, wait: float) -> list[TaskContext]:
    """Up to ``most`` tasks for the agent, waiting up to ``wait`` seconds for the first."""
    rt = runtime()
    return rt.doorbell.claim(lambda: external_agents.claim_batch(rt.uow, agent_id, most), wait)


@blp.route("/<uuid:agent_id>/claim")
class Claim(MethodView):
    @blp.arguments(ClaimQuery, location="query")
    @blp.response(200, ClaimOut)
    @blp.alt_response(204, description="Nothing to do (within `wait`)")
    @blp.alt_response(404, description="No such agent")
    def post(self, args: dict[str, Any], agent_id: uuid.UUID) -> Any:
        """The next queued task this agent may run, under a lease token to report with;
        with ``wait``, held until one is ready (a long poll) rather than answered 204."""
        found = claimed(agent_id, 1, args["wait"])
        return claim_view(found[0]) if found else Response(status=204)


@blp.route("/<uuid:agent_id>/claims")
class Claims(MethodView):
    @blp.arguments(ClaimsQuery, location="query")
    @blp.response(200, ClaimList)
    @blp.alt_response(404, description="No such agent")
    def post(self, args: dict[str, Any], agent_id: uuid.UUID) -> Any:
        """Up to ``max`` queued tasks this agent may run, each under its own lease, in one
        round trip; with ``wait``, held until at least one is ready. ``items`` is empty when
        none came."""
        return {"items": [claim_view(c) for c in claimed(agent_id, args["max"], args["wait"])]}


def claim_view(ctx: TaskContext) -> dict[str, Any]:
    return {
        "task_id": ctx.task_id,
        "ticket_id": ctx.ticket_id,
        "key": ctx.key,
        "task_type": ctx.task_type,
        "attempt": ctx.attempt,
        "idempotency_key": ctx.idempotency_key,
        "lease_token": ctx.lease,
        "payload": ctx.payload,
        "timeout_seconds": ctx.timeout_seconds,
        "dependency_results": ctx.dependency_results,
        "ticket_context": ctx.ticket_context,
    }
