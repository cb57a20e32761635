"""Demo agents for the ``software-dev`` workflow: stand-ins that produce realistic artifacts so
a ticket can walk from backlog to done (``omoi demo``). Real users register their own handlers
for these task types."""

from __future__ import annotations

import time
from typing import Any

from omoi.worker.handlers import TaskContext, handler

PAUSE = 0.3  # long enough to watch the progress bar move


def _title(ctx: TaskContext) -> str:
    return str(ctx.payload.get("title") or ctx.key)


@handler("demo.requirements")
def requirements(ctx: TaskContext) -> dict[str, Any]:
    time.sleep(PAUSE)
    text = (
        f"# Requirements\n\nTask: {ctx.key}. Earlier context: "
        f"{ctx.ticket_context.get('summary', 'none yet')[:200]}\n\n"
        "## Scope\n\nThe change covers the service's public API, its persistence layer and the "
        "operator documentation. Out of scope: the billing system and the mobile clients, "
        "which consume the API unchanged.\n\n"
        "## Acceptance criteria\n\n"
        "1. Every endpoint validates its input and answers 4xx with a JSON error body.\n"
        "2. A request that fails writes nothing to the database.\n"
        "3. The feature is covered by unit and integration tests with coverage of 80 % or more.\n"
        "4. The operator guide describes the new configuration variables.\n"
    )
    ctx.emit_artifact("requirements", {"text": text}, "docs/requirements.md")
    return {
        "summary": "requirements written: scope and four acceptance criteria",
        "decisions": ["the public API stays backward compatible"],
        "risks": ["the persistence change needs a migration"],
    }


@handler("demo.design")
def design(ctx: TaskContext) -> dict[str, Any]:
    time.sleep(PAUSE)
    text = (
        "# Design\n\n## Components\n\nA validation layer in front of the handlers, a service "
        "module owning the transaction, and a migration adding the new table.\n\n"
        "## Risks\n\nThe migration locks the table briefly; run it during low traffic.\n"
    )
    ctx.emit_artifact("design", {"text": text}, "docs/design.md")
    return {
        "summary": "design: validation layer, service module, one migration",
        "decisions": ["validate at the edge, keep services framework-free"],
    }


@handler("demo.implement")
def implement(ctx: TaskContext) -> dict[str, Any]:
    time.sleep(PAUSE)
    ctx.emit_artifact(
        "code", {"files": ["service.py", "schema.py", "migration.py"], "lines_added": 412}, "src/"
    )
    return {"summary": "implemented in 3 files, 412 lines"}


@handler("demo.unit_tests")
def unit_tests(ctx: TaskContext) -> dict[str, Any]:
    time.sleep(PAUSE)
    ctx.emit_artifact("test_report", {"passed": 48, "failed": 0, "coverage": 87.5})
    return {"summary": "48 unit tests pass, coverage 87.5 %"}


@handler("demo.integration_tests")
def integration_tests(ctx: TaskContext) -> dict[str, Any]:
    time.sleep(PAUSE)
    ctx.emit_artifact("integration_report", {"passed": 12, "failed": 0})
    return {"summary": "12 integration tests pass"}


@handler("demo.deploy")
def deploy(ctx: TaskContext) -> dict[str, Any]:
    time.sleep(PAUSE)
    ctx.emit_artifact("deployment", {"environment": "staging", "version": "1.4.0"})
    return {"summary": "deployed 1.4.0 to staging", "notes": ["promote after a day of soak"]}
