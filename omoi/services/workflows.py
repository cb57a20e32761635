"""The workflows omoi knows: the ones shipped in ``omoi/workflows`` and any in
``OMOI_WORKFLOWS_DIR`` (a file there may replace a shipped one by name). Loaded and checked
when the API or a worker starts, so a bad file stops it with a clear message."""

from __future__ import annotations

from pathlib import Path

import yaml

from omoi.domain.workflow import Workflow, WorkflowError, parse
from omoi.services.errors import Invalid

BUILTIN = Path(__file__).resolve().parents[1] / "workflows"
_registry: dict[str, Workflow] = {}


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


def configure(directory: str | Path | None = None) -> dict[str, Workflow]:
    """Load (and check) every workflow; later lookups use this set."""
    _registry.clear()
    _registry.update(load(directory))
    return dict(_registry)


def get(name: str) -> Workflow:
    if not _registry:
        configure()
    try:
        return _registry[name]
    except KeyError:
        raise Invalid(
            f"unknown workflow {name!r}", {"workflow": name, "known": sorted(_registry)}
        ) from None


def all_workflows() -> list[Workflow]:
    if not _registry:
        configure()
    return [_registry[name] for name in sorted(_registry)]
