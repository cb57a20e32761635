"""A Celery app as a Celery user already has one: its broker and result backend are its own
business; omoi never uses them (``omoi worker --celery-app examples.celery_canvas.tasks:app``
runs these tasks inside omoi's attempts)."""

from __future__ import annotations

from celery import Celery

app = Celery("shop", broker="redis://127.0.0.1:6379/0", set_as_current=False)


@app.task(soft_time_limit=30, time_limit=40)
def price(item: str, quantity: int) -> float:
    """The price of ``quantity`` of ``item``."""
    return {"apple": 0.5, "pear": 0.75, "plum": 0.3}.get(item, 1.0) * quantity


@app.task(autoretry_for=(ConnectionError,), max_retries=5, retry_backoff=True)
def total(prices: list[float]) -> float:
    """The chord's body: the header's results, in header order."""
    return round(sum(prices), 2)


@app.task
def with_tax(amount: float, rate: float = 0.2) -> float:
    return round(amount * (1 + rate), 2)
