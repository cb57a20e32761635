"""An example handler module: run workers with ``OMOI_HANDLERS=examples.handlers``."""

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
