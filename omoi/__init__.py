"""omoi: tickets move through phases, phases generate task DAGs, agents run the tasks."""

from omoi.domain.errors import PermanentError, TransientError

__all__ = ["PermanentError", "TransientError"]
__version__ = "0.1.0"
