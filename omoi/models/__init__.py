"""SQLAlchemy models and the engine/session factory."""

from omoi.models.db import Database
from omoi.models.tables import Agent, Base, Event, PhaseHistory, Task, Ticket

__all__ = ["Agent", "Base", "Database", "Event", "PhaseHistory", "Task", "Ticket"]
