"""API tokens and scopes: what a bearer token may do. Pure: hashing and scope rules only."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Collection, Iterable
from enum import StrEnum

TOKEN_PREFIX = "omoi_"


class Scope(StrEnum):
    READ = "read"
    SUBMIT = "submit"
    AGENT = "agent"
    EXEC = "exec"
    ADMIN = "admin"


# Task types whose payload is code the worker runs (a command, a request to any address):
# whoever submits one chooses what runs, so submitting one needs ``exec`` and a worker runs
# one only if its operator enabled the type. Operators mark their own with OMOI_EXEC_TASK_TYPES.
BUILTIN_EXEC_TYPES = frozenset({"shell", "http"})


def exec_types(marked: Iterable[str] = ()) -> frozenset[str]:
    """The built-in exec task types plus those the operator marked."""
    return BUILTIN_EXEC_TYPES | {m.strip() for m in marked if m.strip()}


def refused_exec_types(
    granted: frozenset[str], task_types: Iterable[str], exec_types: Collection[str]
) -> list[str]:
    """The exec task types among ``task_types`` that a token with ``granted`` may not submit:
    all of them without ``exec`` (or ``admin``), none with it."""
    if allows(granted, frozenset({Scope.EXEC})):
        return []
    return sorted({t for t in task_types if t in exec_types})


def new_secret() -> str:
    """A token with 256 random bits; shown once, stored only as its digest."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    """SHA-256 of the token. A slow password hash buys nothing for 256-bit random secrets and
    would cost every request; the digest alone is useless to whoever reads the table."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def allows(granted: frozenset[str], needed: frozenset[Scope]) -> bool:
    """Admin may do anything; otherwise one of the needed scopes must be granted."""
    return Scope.ADMIN in granted or bool(granted & needed)


def parse_scopes(values: list[str] | tuple[str, ...]) -> list[str]:
    """Validated, de-duplicated, ordered scope names (ValueError names the bad one)."""
    known = {s.value for s in Scope}
    bad = [v for v in values if v not in known]
    if bad:
        raise ValueError(f"unknown scope {bad[0]!r}; scopes are {', '.join(sorted(known))}")
    return sorted(set(values))
