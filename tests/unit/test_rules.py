"""Pure rules: ids, routing, error classification, settings, body guards."""

import uuid

import pytest

from omoi.config import Settings
from omoi.domain.enums import ErrorCategory, Priority, TaskStatus
from omoi.domain.errors import PermanentError, TransientError, classify
from omoi.domain.ids import new_id
from omoi.domain.routing import normalize_capabilities, queue_for, queues_for_worker
from omoi.domain.storable import TOO_DEEP, bad_node, storable_text, unstorable


def test_ids_are_uuid7_and_strictly_increasing() -> None:
    ids = [new_id() for _ in range(10_000)]
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_routing_uses_first_capability_or_default() -> None:
    assert queue_for(["gpu", "python"]) == "cap.gpu"
    assert queue_for([]) == "cap.default"
    assert normalize_capabilities([" GPU", "gpu", "Python", ""]) == ["gpu", "python"]
    assert queues_for_worker(["python", "Review", ""]) == [
        "cap.python",
        "cap.review",
        "cap.default",
    ]
    assert queues_for_worker([]) == ["cap.default"]


def test_classification_prefers_explicit_types() -> None:
    assert classify(PermanentError("x")).category == ErrorCategory.PERMANENT
    assert classify(TransientError("x")).category == ErrorCategory.TRANSIENT
    unknown = classify(KeyError("k"))
    assert (unknown.category, unknown.type) == (ErrorCategory.TRANSIENT, "KeyError")


def test_enums_know_terminal_states_and_rank() -> None:
    assert {s for s in TaskStatus if s.terminal} == {"succeeded", "failed", "cancelled"}
    assert sorted(Priority, key=lambda p: p.rank)[0] == Priority.CRITICAL


def test_settings_default_to_embedded(tmp_path: object) -> None:
    s = Settings.from_env({"OMOI_DATA_DIR": "/tmp/x"})
    assert s.embedded
    assert s.database_url == "sqlite:////tmp/x/omoi.sqlite"
    assert s.broker_url == "omoi-sqla+sqlite:////tmp/x/broker.sqlite"


def test_settings_read_typed_values_and_reject_bad_ones() -> None:
    s = Settings.from_env(
        {
            "OMOI_DATABASE_URL": "postgresql://h/db",
            "OMOI_SWEEP_INTERVAL": "2.5",
            "OMOI_MAX_BODY_BYTES": "100",
            "OMOI_HANDLERS": "a.b, c",
        }
    )
    assert (s.embedded, s.sweep_interval, s.max_body_bytes) == (False, 2.5, 100)
    assert s.handlers == ("a.b", "c")
    with pytest.raises(ValueError, match="OMOI_SWEEP_INTERVAL"):
        Settings.from_env({"OMOI_SWEEP_INTERVAL": "soon"})


def test_bad_node_finds_nul_and_surrogates_anywhere_and_deep_nesting() -> None:
    assert bad_node({"a": [1, {"b": "ok"}]}, 3) is None
    assert bad_node({"a": [1, {"b": "n\x00"}]}, 3) == "$.a[1].b"
    assert bad_node({"k\x00": 1}, 3) == "$.<key>"
    assert bad_node(["\ud800"], 3) == "$[0]"
    assert bad_node({"a": [1, {"b": "ok"}]}, 2) == TOO_DEEP
    assert bad_node([float("nan")], 3) == "$[0]"
    assert bad_node("\x00", 3) == "$"
    assert bad_node({"a": {"k\ud800": 1}}, 3) == "$.a.<key>"


def test_bad_node_settles_clean_values_without_mistaking_their_text() -> None:
    """The fast path reads the encoded text: an escaped backslash before ``u0000`` is no NUL,
    a character outside the BMP no surrogate, and depth counts containers only."""
    assert bad_node({"a": "\\u0000", "b": "\U0001f600", "c": ["é"] * 3}, 3) is None
    assert bad_node([{"a": [1]}] * 1000, 3) is None
    assert bad_node([{"a": [1]}] * 1000, 2) == TOO_DEEP
    assert bad_node([[0] * 10, [[0]]], 3) is None and bad_node([[0] * 10, [[[0]]]], 3) == TOO_DEEP


def test_unstorable_names_what_postgresql_refuses() -> None:
    assert unstorable({"a": [1, 2.5, "ok", None, True]}) is None
    assert "Out of range float" in (unstorable({"x": float("nan")}) or "")
    assert "Out of range float" in (unstorable([float("inf")]) or "")
    assert (
        unstorable({"s": "a\x00b"}) == "the string at $.s holds a NUL character or a lone surrogate"
    )
    assert unstorable(["\udc80"]) == "the string at $[0] holds a NUL character or a lone surrogate"
    assert "not JSON serializable" in (unstorable({"o": object()}) or "")


def test_storable_text_escapes_only_what_must_be_escaped() -> None:
    assert storable_text("plain") == "plain"
    assert storable_text("a\x00b\ud800") == "a\\x00b\\ud800"
