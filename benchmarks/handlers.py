"""The benchmark's handlers (``OMOI_HANDLERS=benchmarks.handlers`` on its workers):
``bench.logging`` is ``noop`` that also writes a few lines to its attempt's log, the figure
``python -m benchmarks`` prints beside noop's."""

from __future__ import annotations

import logging
from typing import Any

from omoi.worker.handlers import TaskContext, handler

LINES = 5  # four ctx.log lines and one logging record a task
log = logging.getLogger(__name__)


@handler("bench.logging")
def logging_noop(ctx: TaskContext) -> Any:
    for n in range(LINES - 1):
        ctx.log(f"step {n} of task {ctx.key}")
    log.warning("task %s done", ctx.key)  # the benchmark's workers log warnings and above
    return {"ok": True}
