"""Workflows as data: phases, the one transition table, per-phase task templates and gates.

A workflow file (YAML) is parsed into these types; every rule about which phase may follow which
lives in ``Workflow.allowed``. A workflow names its own phases (any name matching
``PHASE_NAME_PATTERN``); every workflow ends in PHASE_DONE, and PHASE_BLOCKED is implicit: any
working phase may block, and a blocked ticket may return to the phase it came from or any
earlier one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from omoi.domain import dag, specs
from omoi.domain.enums import PHASE_BLOCKED, PHASE_DONE, PHASE_NAME_PATTERN, is_phase_name

MAX_PHASES = 32  # of one workflow, PHASE_DONE included


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
    name: str
    tasks: tuple[Template, ...] = ()
    gate: Gate = Gate()


@dataclass(frozen=True)
class Workflow:
    name: str
    phases: tuple[PhaseSpec, ...]
    transitions: Mapping[str, tuple[str, ...]]
    description: str = ""

    @property
    def initial(self) -> str:
        return self.phases[0].name

    @property
    def names(self) -> list[str]:
        """Its phases in order, PHASE_DONE last."""
        return [p.name for p in self.phases]

    def has(self, phase: str) -> bool:
        """Whether a ticket of this workflow may be in ``phase`` (PHASE_BLOCKED included)."""
        return phase == PHASE_BLOCKED or phase in self.names

    def spec(self, phase: str) -> PhaseSpec:
        for spec in self.phases:
            if spec.name == phase:
                return spec
        raise KeyError(phase)

    @property
    def working(self) -> list[str]:
        return [p.name for p in self.phases if p.name != PHASE_DONE]

    def next_phase(self, phase: str) -> str | None:
        """Where a passed gate leads: the first transition listed for the phase."""
        targets = self.transitions.get(phase, ())
        return targets[0] if targets else None

    def allowed(self, phase: str, came_from: str | None = None) -> list[str]:
        """Every phase a ticket in ``phase`` may move to (``came_from`` matters when blocked)."""
        if phase == PHASE_BLOCKED:
            if came_from is None or came_from not in self.working:
                return self.working
            return self.working[: self.working.index(came_from) + 1]
        targets = list(self.transitions.get(phase, ()))
        if phase in self.working:
            targets.append(PHASE_BLOCKED)
        return targets


def current_phase(ticket: Any) -> str:
    """The phase a ticket (anything with ``phase`` and ``previous_phase``) works in: for a
    blocked one, the phase it is blocked in."""
    return ticket.previous_phase if ticket.phase == PHASE_BLOCKED else ticket.phase  # type: ignore[no-any-return]


def _phase(value: Any, where: str) -> str:
    """A phase name as a workflow file may write it: the pattern, and never PHASE_BLOCKED."""
    if not is_phase_name(value):
        raise WorkflowError(
            f"{where}: {value!r} is not a phase name; a phase is named by {PHASE_NAME_PATTERN}"
            " (an upper-case letter, then upper-case letters, digits or underscores)"
        )
    if value == PHASE_BLOCKED:
        raise WorkflowError(f"{where}: PHASE_BLOCKED is implicit; do not list it")
    return value  # type: ignore[no-any-return]


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
        templates = tuple(
            _template(t, f"{where}.tasks[{i}]") for i, t in enumerate(entry.get("tasks", []))
        )
        problems = dag.validate([(t.key, t.depends_on) for t in templates])
        if problems:
            raise WorkflowError(f"{where}: {problems.message()}")
        phases.append(PhaseSpec(name, templates, _gate(entry.get("gate"), f"{where}.gate")))
    names = [p.name for p in phases]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise WorkflowError(f"{source}: phases listed twice: {', '.join(twice)}")
    if names[-1] != PHASE_DONE:
        raise WorkflowError(f"{source}: the last phase must be {PHASE_DONE}")
    if len(names) > MAX_PHASES:
        raise WorkflowError(f"{source}: {len(names)} phases; a workflow has at most {MAX_PHASES}")
    transitions: dict[str, tuple[str, ...]] = {}
    raw_transitions = raw.get("transitions") or {}
    if not isinstance(raw_transitions, dict):
        raise WorkflowError(f"{source}: transitions must map a phase to a list of phases")
    for key, targets in raw_transitions.items():
        src = _phase(key, f"{source}: transitions")
        if src not in names:
            raise WorkflowError(f"{source}: transitions from {src} which is not a phase here")
        if src == PHASE_DONE:
            raise WorkflowError(f"{source}: transitions from {PHASE_DONE}, which is terminal")
        if not isinstance(targets, list):
            raise WorkflowError(f"{source}: transitions.{src} must be a list of phases")
        dsts = tuple(_phase(t, f"{source}: transitions.{src}") for t in targets)
        missing = [d for d in dsts if d not in names]
        if missing:
            raise WorkflowError(f"{source}: transitions.{src} to phases not listed: {missing}")
        transitions[src] = dsts
    stuck = [n for n in names[:-1] if not transitions.get(n)]
    if stuck:
        raise WorkflowError(f"{source}: no way out of {', '.join(stuck)}")
    return Workflow(raw["name"], tuple(phases), transitions, raw.get("description", ""))
