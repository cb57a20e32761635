"""Workflows as data: phases, the one transition table, per-phase task templates and gates.

A workflow file (YAML) is parsed into these types; every rule about which phase may follow which
lives in ``Workflow.allowed``. BLOCKED is implicit: any working phase may block, and a blocked
ticket may return to the phase it came from or any earlier one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from omoi.domain import dag, specs
from omoi.domain.enums import Phase


class WorkflowError(ValueError):
    """A workflow file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class ArtifactRule:
    type: str
    min_length: int = 0
    sections: tuple[str, ...] = ()
    min_coverage: float | None = None
    all_tests_passed: bool = False


@dataclass(frozen=True)
class Gate:
    artifacts: tuple[ArtifactRule, ...] = ()
    approval: bool = False
    validation_task: str | None = None


@dataclass(frozen=True)
class Template:
    key: str
    task_type: str
    description: str = ""
    capabilities: tuple[str, ...] = ()
    depends_on: tuple[str, ...] = ()
    priority: str | None = None
    max_retries: int | None = None
    timeout_seconds: float | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)
    sync: Mapping[str, Any] | None = None  # {"need": N, "timeout_seconds": T}


@dataclass(frozen=True)
class PhaseSpec:
    name: Phase
    tasks: tuple[Template, ...] = ()
    gate: Gate = Gate()


@dataclass(frozen=True)
class Workflow:
    name: str
    phases: tuple[PhaseSpec, ...]
    transitions: Mapping[Phase, tuple[Phase, ...]]
    description: str = ""

    @property
    def initial(self) -> Phase:
        return self.phases[0].name

    def spec(self, phase: Phase | str) -> PhaseSpec:
        for spec in self.phases:
            if spec.name == phase:
                return spec
        raise KeyError(phase)

    @property
    def working(self) -> list[Phase]:
        return [p.name for p in self.phases if p.name != Phase.DONE]

    def next_phase(self, phase: Phase | str) -> Phase | None:
        """Where a passed gate leads: the first transition listed for the phase."""
        targets = self.transitions.get(Phase(phase), ())
        return targets[0] if targets else None

    def allowed(self, phase: Phase | str, came_from: Phase | str | None = None) -> list[Phase]:
        """Every phase a ticket in ``phase`` may move to (``came_from`` matters when blocked)."""
        phase = Phase(phase)
        if phase == Phase.BLOCKED:
            if came_from is None or Phase(came_from) not in self.working:
                return self.working
            return self.working[: self.working.index(Phase(came_from)) + 1]
        targets = list(self.transitions.get(phase, ()))
        if phase in self.working:
            targets.append(Phase.BLOCKED)
        return targets


def _phase(value: Any, where: str) -> Phase:
    try:
        return Phase(value)
    except ValueError:
        raise WorkflowError(
            f"{where}: unknown phase {value!r}; phases are {', '.join(p.value for p in Phase)}"
        ) from None


def _template(raw: Any, where: str) -> Template:
    bad = specs.problems(raw, Template.__dataclass_fields__)
    if bad:
        raise WorkflowError(f"{where}: {'; '.join(bad)}")
    return Template(
        **{
            **raw,
            "capabilities": tuple(raw.get("capabilities", ())),
            "depends_on": tuple(raw.get("depends_on", ())),
        }
    )


def _gate(raw: Any, where: str) -> Gate:
    if raw is None:
        return Gate()
    if not isinstance(raw, dict):
        raise WorkflowError(f"{where}: gate must be a mapping")
    rules = []
    for n, rule in enumerate(raw.get("artifacts", [])):
        if not isinstance(rule, dict) or "type" not in rule:
            raise WorkflowError(f"{where}.artifacts[{n}]: needs a type")
        unknown = set(rule) - set(ArtifactRule.__dataclass_fields__)
        if unknown:
            raise WorkflowError(f"{where}.artifacts[{n}]: unknown fields {sorted(unknown)}")
        rules.append(ArtifactRule(**{**rule, "sections": tuple(rule.get("sections", ()))}))
    unknown = set(raw) - {"artifacts", "approval", "validation_task"}
    if unknown:
        raise WorkflowError(f"{where}: unknown gate fields {sorted(unknown)}")
    return Gate(tuple(rules), bool(raw.get("approval", False)), raw.get("validation_task"))


def parse(raw: Any, source: str) -> Workflow:
    """Build and check a workflow from a parsed YAML document."""
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise WorkflowError(f"{source}: a workflow needs a name")
    if not isinstance(raw.get("phases"), list) or not raw["phases"]:
        raise WorkflowError(f"{source}: a workflow needs a list of phases")
    phases = []
    for n, entry in enumerate(raw["phases"]):
        where = f"{source}: phases[{n}]"
        if not isinstance(entry, dict) or "name" not in entry:
            raise WorkflowError(f"{where}: each phase needs a name")
        name = _phase(entry["name"], where)
        if name == Phase.BLOCKED:
            raise WorkflowError(f"{where}: PHASE_BLOCKED is implicit; do not list it")
        templates = tuple(
            _template(t, f"{where}.tasks[{i}]") for i, t in enumerate(entry.get("tasks", []))
        )
        problems = dag.validate([(t.key, t.depends_on) for t in templates])
        if problems:
            raise WorkflowError(f"{where}: {problems.message()}")
        phases.append(PhaseSpec(name, templates, _gate(entry.get("gate"), f"{where}.gate")))
    names = [p.name for p in phases]
    if len(set(names)) != len(names):
        raise WorkflowError(f"{source}: a phase is listed twice")
    if names[-1] != Phase.DONE:
        raise WorkflowError(f"{source}: the last phase must be PHASE_DONE")
    transitions: dict[Phase, tuple[Phase, ...]] = {}
    for key, targets in (raw.get("transitions") or {}).items():
        src = _phase(key, f"{source}: transitions")
        if src not in names:
            raise WorkflowError(f"{source}: transitions from {src} which is not a phase here")
        dsts = tuple(_phase(t, f"{source}: transitions.{src}") for t in targets)
        missing = [d for d in dsts if d not in names]
        if missing:
            raise WorkflowError(f"{source}: transitions.{src} to phases not listed: {missing}")
        transitions[src] = dsts
    stuck = [n for n in names[:-1] if not transitions.get(n)]
    if stuck:
        raise WorkflowError(f"{source}: no way out of {', '.join(stuck)}")
    return Workflow(raw["name"], tuple(phases), transitions, raw.get("description", ""))
