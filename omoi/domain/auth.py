"""API tokens and scopes: what a bearer token may do. Pure: hashing and scope rules only."""

from __future__ import annotations

import hashlib
import secrets
from enum import StrEnum

TOKEN_PREFIX = "omoi_"


class Scope(StrEnum):
    READ = "read"
    SUBMIT = "submit"
    AGENT = "agent"
    ADMIN = "admin"


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
