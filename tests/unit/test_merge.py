from datetime import UTC, datetime, timedelta

import pytest

from omoi.domain.merge import merge_results

NOW = datetime.now(UTC)


def test_strategies() -> None:
    results = {"a": 1, "b": 2, "c": 1}
    finished = {"a": NOW, "b": NOW - timedelta(seconds=1), "c": NOW}
    assert merge_results("all", ["c", "a", "b"], results, finished) == [1, 1, 2]
    assert merge_results("first", ["a", "b", "c"], results, finished) == 2
    assert merge_results("majority", ["a", "b", "c"], results, finished) == {
        "value": 1,
        "votes": 2,
        "of": 3,
    }
    with pytest.raises(ValueError, match="no majority"):
        merge_results("majority", ["a", "b"], {"a": 1, "b": 2}, finished)
