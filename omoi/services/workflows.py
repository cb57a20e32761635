"""The workflows omoi knows: the ones shipped in ``omoi/workflows`` and any in
``OMOI_WORKFLOWS_DIR`` (a file there may replace a shipped one by name). Loaded and checked
when the API or a worker starts, so a bad file stops it with a clear message."""

from __future__ import annotations

from pathlib import Path

import yaml

from omoi.domain.enums import PHASE_BLOCKED
from omoi.domain.workflow import Workflow, WorkflowError, parse
from omoi.services.errors import Invalid

BUILTIN = Path(__file__).resolve().parents[1] / "workflows"


def load(directory: str | Path | None = None) -> dict[str, Workflow]:
    found: dict[str, Workflow] = {}
    folders = [BUILTIN] + ([Path(directory)] if directory else [])
    for folder in folders:
        if not folder.is_dir():
            raise WorkflowError(f"OMOI_WORKFLOWS_DIR {folder} is not a directory")
        for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
            try:
                raw = yaml.safe_load(path.read_text())
            except yaml.YAMLError as exc:
                raise WorkflowError(f"{path}: not valid YAML: {exc}") from exc
            workflow = parse(raw, str(path))
            found[workflow.name] = workflow
    return found


class Workflows:
    """The workflows one process knows, by name: loaded and checked once, by the composition
    root, and handed to the use cases through their unit of work."""

    def __init__(self, by_name: dict[str, Workflow]) -> None:
        self._by_name = dict(by_name)

    @classmethod
    def load(cls, directory: str | Path | None = None) -> Workflows:
        """The shipped workflows and those in ``directory`` (a bad file raises
        ``WorkflowError``)."""
        return cls(load(directory))

    def get(self, name: str) -> Workflow:
        try:
            return self._by_name[name]
        except KeyError:
            raise Invalid(
                f"unknown workflow {name!r}", {"workflow": name, "known": sorted(self._by_name)}
            ) from None

    def find(self, name: str) -> Workflow | None:
        """The workflow, or None (a ticket's workflow this deployment no longer has)."""
        return self._by_name.get(name)

    def all(self) -> list[Workflow]:
        return [self._by_name[name] for name in sorted(self._by_name)]

    def require_phase(self, phase: str, workflow: str | None = None) -> None:
        """Invalid unless ``phase`` is one a ticket can be in: a phase of ``workflow`` when
        this deployment knows it, else of any workflow it knows (PHASE_BLOCKED is every
        workflow's)."""
        known = self.find(workflow) if workflow is not None else None
        among = [known] if known is not None else self.all()
        if any(w.has(phase) for w in among):
            return
        names = sorted({n for w in among for n in w.names} | {PHASE_BLOCKED})
        where = f"workflow {known.name}" if known else "any workflow"
        raise Invalid(f"{phase} is not a phase of {where}", {"phase": phase, "phases": names})
