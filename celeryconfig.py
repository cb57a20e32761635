"""Celery's configuration module, kept at the top level where Celery projects keep it: omoi's
configuration is ``config_for(settings)``, defined in ``omoi/broker/config.py``."""

from omoi.broker.config import config_for

__all__ = ["config_for"]
