from omoi.domain.dag import find_cycle, validate


def test_valid_graph_has_no_problems() -> None:
    assert not validate([("a", []), ("b", ["a"]), ("c", ["a", "b"])])


def test_cycle_is_named_in_order() -> None:
    problems = validate([("a", ["c"]), ("b", ["a"]), ("c", ["b"]), ("d", [])])
    assert problems.cycle == ["a", "c", "b", "a"]
    assert "dependency cycle: a -> c -> b -> a" in problems.message()


def test_self_dependency_missing_and_duplicates_are_all_reported() -> None:
    problems = validate([("a", ["a"]), ("b", ["x", "y"]), ("b", [])])
    assert problems.self_dependencies == ["a"]
    assert problems.duplicate_keys == ["b"]
    assert problems.as_dict()["duplicate_keys"] == ["b"]


def test_missing_targets_are_listed_per_task() -> None:
    problems = validate([("a", ["x", "y"]), ("b", ["a"])])
    assert problems.missing == {"a": ["x", "y"]}


def test_long_chain_does_not_recurse() -> None:
    n = 50_000
    graph = {f"t{i}": ([f"t{i - 1}"] if i else []) for i in range(n)}
    assert find_cycle(graph) == []
    graph["t0"] = [f"t{n - 1}"]
    cycle = find_cycle(graph)
    assert cycle[0] == cycle[-1] and len(cycle) == n + 1
