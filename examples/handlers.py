"""An example handler module: run workers with ``OMOI_HANDLERS=examples.handlers``."""

import json
import urllib.request
from typing import Any

from omoi import PermanentError, TransientError
from omoi.worker.handlers import TaskContext, handler


@handler("word-count")
def word_count(ctx: TaskContext) -> dict[str, Any]:
    """Counts the words of ``payload.text`` plus those its dependencies counted."""
    text = ctx.payload.get("text")
    if not isinstance(text, str):
        raise PermanentError("word-count needs payload.text")  # retrying cannot help
    if ctx.should_cancel():
        raise TransientError("cancelled before starting")
    upstream = sum(r.get("words", 0) for r in ctx.dependency_results.values())
    return {"words": len(text.split()) + upstream}


@handler("notify")
def notify(ctx: TaskContext) -> dict[str, Any]:
    """Posts ``payload.text`` to ``payload.url`` once, however often it runs: a worker killed
    after the post but before the result commits runs it again, and the receiver drops the
    repeated ``Idempotency-Key``, as payment APIs and most webhooks do."""
    request = urllib.request.Request(
        ctx.payload["url"],
        data=json.dumps({"text": ctx.payload["text"]}).encode(),
        headers={"Content-Type": "application/json", "Idempotency-Key": ctx.idempotency_key},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return {"status": response.status}
