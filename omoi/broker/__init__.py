"""Everything that touches Celery, kombu or Redis: the Celery app and its configuration
(``app``, ``config``), the dispatcher that turns ready tasks into messages (``dispatcher``),
omoi's kombu transports (``transports``) and the Redis side of the event relay (``relay``).
The API, the worker and beat import it; services and persistence never do."""
