"""Celery side: the worker app, its one thin job (ids in → service call), handlers."""
