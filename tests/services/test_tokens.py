"""API tokens: a secret shown once and stored only as its digest, scopes checked when made,
revocation by id or name, and the per-process cache that sees a revocation within its TTL."""

from __future__ import annotations

import pytest

from omoi.domain.auth import digest
from omoi.domain.enums import AgentKind
from omoi.persistence import Database
from omoi.services import agents, tokens
from omoi.services.errors import Invalid, NotFound


def test_a_token_keeps_only_its_secrets_digest(db: Database) -> None:
    made, secret = tokens.create(db, "ci", ["submit"])
    with db.connect() as conn:
        stored = conn.execute(tokens.tokens.select()).one()
    assert stored.digest == digest(secret) and secret not in tuple(map(str, stored))
    assert (made["name"], made["scopes"], made["revoked_at"]) == ("ci", ["submit"], None)
    authenticate = tokens.Authenticator(db)
    principal = authenticate(secret)
    assert principal is not None
    assert (principal.token_id, principal.name, principal.scopes) == (
        made["id"],
        "ci",
        frozenset({"submit"}),
    )
    assert authenticate("not-the-secret") is None


@pytest.mark.parametrize(("scopes", "refusal"), [([], "at least one scope"), (["root"], "root")])
def test_a_token_needs_known_scopes(db: Database, scopes: list[str], refusal: str) -> None:
    with pytest.raises(Invalid, match=refusal):
        tokens.create(db, "x", scopes)
    assert tokens.list_tokens(db) == []


def test_revoking_by_name_or_id_ends_the_tokens_authentication(db: Database) -> None:
    one, secret = tokens.create(db, "ci", ["admin"])
    tokens.create(db, "ci", ["admin"])
    authenticate = tokens.Authenticator(db, ttl=0)
    assert tokens.revoke(db, str(one["id"])) == 1
    assert authenticate(secret) is None
    assert tokens.active_among(db, [one["id"]]) == set()
    assert tokens.revoke(db, "ci") == 1  # the other one
    assert not tokens.any_active(db)
    with pytest.raises(NotFound):
        tokens.revoke(db, "ci")


def test_a_cached_lookup_outlives_a_revocation_until_its_ttl_or_forget(db: Database) -> None:
    made, secret = tokens.create(db, "ci", ["admin"])
    authenticate = tokens.Authenticator(db, ttl=3600)
    assert authenticate(secret) is not None
    tokens.revoke(db, str(made["id"]))
    assert authenticate.cached(secret) is not None  # within the TTL: no query
    authenticate.forget(secret)
    assert authenticate.cached(secret) is None
    assert authenticate(secret) is None


def test_a_configured_secret_becomes_one_token_however_often_it_is_ensured(db: Database) -> None:
    for _ in range(2):
        tokens.ensure(db, "bootstrap", "s3cret-s3cret", ["admin"])
    assert [t["name"] for t in tokens.list_tokens(db)] == ["bootstrap"]


def test_an_agent_token_acts_as_the_agent_it_was_bound_to(db: Database) -> None:
    made, secret = tokens.create(db, "bot", ["agent"])
    agent_id = agents.register(db, name="bot", kind=AgentKind.EXTERNAL, capabilities=[])
    tokens.bind_agent(db, made["id"], agent_id)
    principal = tokens.Authenticator(db)(secret)
    assert principal is not None and principal.agent_id == agent_id
