"""Context that flows from phase to phase: each finished phase aggregated, all earlier phases
summarized to a budget for the next phase's handlers."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

LISTS = ("decisions", "risks", "notes")


def _summary(result: Any, limit: int = 300) -> str:
    if isinstance(result, Mapping) and isinstance(result.get("summary"), str):
        text = result["summary"]
    else:
        text = json.dumps(result, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def aggregate(results: Sequence[tuple[str, Any]], artifacts: Sequence[str]) -> dict[str, Any]:
    """One phase: a summary per task, the decisions, risks and notes its results reported, and
    the artifact types it produced."""
    phase: dict[str, Any] = {
        "tasks": {key: _summary(result) for key, result in results},
        "artifacts": sorted(set(artifacts)),
    }
    for name in LISTS:
        phase[name] = [
            item
            for _, result in results
            if isinstance(result, Mapping)
            for item in result.get(name, [])
            if isinstance(item, str)
        ]
    return phase


def summarize(phases: Mapping[str, Mapping[str, Any]], budget: int) -> str:
    """All phases as text within ``budget`` characters; the newest phases keep the most."""
    blocks = []
    for name, phase in phases.items():
        lines = [f"{name}:"]
        lines += [f"- {key}: {text}" for key, text in phase.get("tasks", {}).items()]
        for kind in LISTS:
            lines += [f"- {kind[:-1]}: {item}" for item in phase.get(kind, [])]
        blocks.append("\n".join(lines))
    text = "\n".join(blocks)
    while len(text) > budget and len(blocks) > 1:
        oldest = blocks.pop(0)
        blocks[0] = oldest.splitlines()[0] + " (summarized) " + blocks[0]
        text = "\n".join(blocks)
    return text if len(text) <= budget else text[: max(0, budget - 1)] + "…"
