"""Use cases, each named for what it does. They change things through one ``UnitOfWork``
(``unit_of_work.py``): a transaction, then what it made ready published through the
``Dispatcher`` interface. No Flask, no marshmallow, no Celery. Read models are in ``read``."""
