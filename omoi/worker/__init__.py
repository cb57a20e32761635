"""Celery side: the worker app, thin jobs (ids in → service call), beat schedule, handlers."""
