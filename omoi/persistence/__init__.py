"""SQLAlchemy models and the engine/session factory."""

from omoi.persistence.db import Database
from omoi.persistence.tables import (
    Agent,
    AgentMessage,
    ApiToken,
    Approval,
    Artifact,
    Base,
    BoardSession,
    Event,
    GateResult,
    PhaseHistory,
    Resource,
    ResourceLock,
    Task,
    TaskLog,
    Ticket,
)

__all__ = [
    "Agent",
    "AgentMessage",
    "ApiToken",
    "Approval",
    "Artifact",
    "Base",
    "BoardSession",
    "Database",
    "Event",
    "GateResult",
    "PhaseHistory",
    "Resource",
    "ResourceLock",
    "Task",
    "TaskLog",
    "Ticket",
]
