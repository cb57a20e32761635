"""Use cases on a database session. No Flask, no marshmallow, no Celery: publishing goes
through the ``Dispatcher`` interface."""
