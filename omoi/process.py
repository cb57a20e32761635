"""What every omoi process sets up before serving, the API and the worker alike."""

from __future__ import annotations

import gc

from omoi.logs import configure as configure_logs

# CPython's default (700) runs a young collection every 700 container allocations, and with
# them, whenever the survivors have grown the heap by a quarter, a full collection that walks
# every object in the process. Accepting a 10,000-task ticket leaves some 190,000 more
# containers allocated than freed while it runs: two or three full collections of ~100 ms
# each, a quarter of the request. At 10,000 it runs none (tests/integration/test_api_input).
YOUNG_COLLECTION_THRESHOLD = 10_000


def set_up(log_level: str) -> None:
    configure_logs(log_level)
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(young, YOUNG_COLLECTION_THRESHOLD), middle, old)
