"""Submit a chord of the example app's tasks to a running omoi and print its result:

    omoi worker --celery-app examples.celery_canvas.tasks:app      # in one shell
    python -m examples.celery_canvas.submit                        # in another

The API and token are found as the CLI finds them (``OMOI_API_URL``, ``OMOI_TOKEN`` or the
token ``omoi up`` saved)."""

from __future__ import annotations

from celery import chain, chord

from examples.celery_canvas.tasks import price, total, with_tax
from omoi.client import Client
from omoi.config import Settings


def main() -> None:
    order = {"apple": 4, "pear": 2, "plum": 10}
    canvas = chain(chord([price.s(item, n) for item, n in order.items()], total.s()), with_tax.s())
    client = Client.from_settings(Settings.from_env())
    handle = client.submit_canvas(canvas, "price an order")
    print(f"ticket {handle.ticket_id}: waiting")
    print(f"total with tax: {handle.get(timeout=120)}")


if __name__ == "__main__":
    main()
