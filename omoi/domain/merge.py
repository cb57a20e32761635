"""Merge strategies for a split's results: pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any


def merge_results(
    strategy: str,
    order: Sequence[str],
    results: Mapping[str, Any],
    finished: Mapping[str, datetime],
) -> Any:
    """The built-in merge strategies over the subtasks' results."""
    values = [results[k] for k in order if k in results]
    if strategy == "first":
        return results[min(finished, key=lambda k: finished[k])] if finished else None
    if strategy == "majority":
        votes: dict[str, tuple[int, Any]] = {}
        for value in values:
            key = repr(value)
            votes[key] = (votes.get(key, (0, value))[0] + 1, value)
        count, winner = max(votes.values(), key=lambda v: v[0])
        if count * 2 <= len(values):
            raise ValueError(f"no majority among {len(values)} results")
        return {"value": winner, "votes": count, "of": len(values)}
    return values
