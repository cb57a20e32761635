"""Phase gates: does a phase's work meet its criteria? Pure: the caller gathers the facts."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from omoi.domain.workflow import ArtifactRule, Gate

WAITING_FOR_APPROVAL = "waiting for approval"  # the reason of a gate that wants only a person


@dataclass
class Verdict:
    passed: bool
    missing: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)


def text_of(content: Any) -> str:
    """The readable text of an artifact: its ``text`` field, or the whole document."""
    if isinstance(content, Mapping) and isinstance(content.get("text"), str):
        return content["text"]
    return content if isinstance(content, str) else json.dumps(content)


def has_section(content: Any, section: str) -> bool:
    """A markdown heading (``## Acceptance criteria``) or a key (``acceptance_criteria``)."""
    if isinstance(content, Mapping) and section in content:
        return True
    words = section.replace("_", "[ _-]")
    return re.search(rf"^#+\s*{words}\b", text_of(content), re.I | re.M) is not None


def _check(rule: ArtifactRule, content: Any) -> list[str]:
    problems = []
    length = len(text_of(content))
    if length < rule.min_length:
        problems.append(f"{rule.type} is {length} characters; at least {rule.min_length} needed")
    for section in rule.sections:
        if not has_section(content, section):
            problems.append(f"{rule.type} lacks a '{section}' section")
    if rule.min_coverage is not None:
        coverage = content.get("coverage") if isinstance(content, Mapping) else None
        if not isinstance(coverage, int | float) or coverage < rule.min_coverage:
            problems.append(f"{rule.type} coverage {coverage} is below {rule.min_coverage} %")
    if rule.all_tests_passed:
        failed = content.get("failed") if isinstance(content, Mapping) else None
        passed = content.get("passed") if isinstance(content, Mapping) else None
        if failed != 0 or not passed:
            problems.append(f"{rule.type} reports {failed} failed and {passed} passed tests")
    return problems


def evaluate(
    gate: Gate,
    task_statuses: Mapping[str, str],
    artifacts: Sequence[tuple[str, Any]],
    approved: bool,
) -> Verdict:
    """Every task succeeded, every required artifact exists and meets its rule (the newest of
    each type counts), the validation task (if any) succeeded, approval (if required) given."""
    verdict = Verdict(passed=True)
    unfinished = sorted(k for k, s in task_statuses.items() if s != "succeeded")
    if unfinished:
        verdict.reasons.append(f"tasks not succeeded: {', '.join(unfinished)}")
    newest = {kind: content for kind, content in artifacts}
    for rule in gate.artifacts:
        if rule.type not in newest:
            verdict.missing.append(rule.type)
            verdict.reasons.append(f"missing artifact: {rule.type}")
        else:
            verdict.reasons.extend(_check(rule, newest[rule.type]))
    if gate.validation_task and task_statuses.get(gate.validation_task) != "succeeded":
        verdict.reasons.append(f"validation task {gate.validation_task} has not succeeded")
    if gate.approval and not approved:
        verdict.missing.append("approval")
        verdict.reasons.append(WAITING_FOR_APPROVAL)
    verdict.passed = not verdict.reasons
    return verdict


def _quoted(names: Sequence[str]) -> str:
    words = [f"“{n.replace('_', ' ')}”" for n in names]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _artifact_sentence(rule: ArtifactRule) -> str:
    clauses = []
    if rule.min_length:
        clauses.append(f"at least {rule.min_length:,} characters long")
    if rule.sections:
        noun = "section" if len(rule.sections) == 1 else "sections"
        clauses.append(f"with the {noun} {_quoted(rule.sections)}")
    if rule.min_coverage is not None:
        clauses.append(f"covering at least {rule.min_coverage:g} % of the code")
    if rule.all_tests_passed:
        clauses.append("reporting every test passed")
    article = "an" if rule.type[:1].lower() in "aeiou" else "a"
    return " ".join([f"{article} {rule.type} artifact", ", ".join(clauses)]).strip()


def describe(gate: Gate) -> list[str]:
    """What the gate asks, as sentences a person reads (the board shows them)."""
    sentences = ["every task of the phase succeeded"]
    if gate.validation_task:
        sentences.append(f"the validation task {gate.validation_task} succeeded")
    sentences.extend(_artifact_sentence(rule) for rule in gate.artifacts)
    if gate.approval:
        sentences.append("a person approved it")
    return sentences
