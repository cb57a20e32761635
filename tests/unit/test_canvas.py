"""The canvas compiler (``omoi.domain.canvas``): Celery canvases, built from real signatures of
a Celery app's tasks, become one ``dag`` ticket with Celery's argument passing; what cannot be
carried is refused naming where. Pure: no server."""

from __future__ import annotations

from typing import Any

import pytest
from celery import chain, chord, group, signature

from omoi.domain import canvas as cv
from tests.support.celery_app import add, auto, echo, flaky, mul, slow, tsum


def tasks_of(compiled: cv.CompiledCanvas) -> dict[str, dict[str, Any]]:
    return {t["key"]: t for t in compiled.ticket["tasks"]}


def edges(compiled: cv.CompiledCanvas) -> dict[str, tuple[list[str], Any]]:
    """``{key: (depends_on, input shape)}``."""
    return {k: (t["depends_on"], t["payload"]["input"]) for k, t in tasks_of(compiled).items()}


def run(compiled: cv.CompiledCanvas) -> Any:
    """Evaluate the compiled ticket in dependency order with the tasks' own functions: what
    omoi's workers compute, without them."""
    funcs = {"add": add.run, "mul": mul.run, "tsum": tsum.run, "echo": echo.run}
    results: dict[str, Any] = {}
    pending = list(compiled.ticket["tasks"])
    while pending:
        spec = next(t for t in pending if set(t["depends_on"]) <= set(results))
        pending.remove(spec)
        args, kwargs = cv.call_arguments(spec["payload"], results)
        if spec["task_type"] == cv.COLLECT:
            results[spec["key"]] = args[0]
        else:
            name = spec["task_type"].removeprefix("celery:").rsplit(".", 1)[-1]
            results[spec["key"]] = funcs[name](*args, **kwargs)
    return results[compiled.result_key]


def compiled(canvas: Any) -> cv.CompiledCanvas:
    return cv.compile_canvas(canvas, "t")


def test_a_chain_passes_each_result_as_the_next_tasks_first_argument() -> None:
    c = compiled(chain(add.s(1, 2), mul.s(10), add.s(5)))
    assert edges(c) == {
        "0.add": ([], None),
        "1.mul": (["0.add"], "0.add"),
        "2.add": (["1.mul"], "1.mul"),
    }
    assert tasks_of(c)["1.mul"]["payload"]["args"] == [10]
    assert tasks_of(c)["0.add"]["task_type"] == "celery:tests.support.celery_app.add"
    assert c.result_key == "2.add"
    assert run(c) == 35
    assert c.ticket["workflow"] == "dag" and c.ticket["title"] == "t"


def test_an_immutable_signature_follows_but_receives_nothing() -> None:
    c = compiled(chain(add.s(1, 2), add.si(10, 20), mul.s(2)))
    assert edges(c)["1.add"] == (["0.add"], None)
    assert run(c) == 60


def test_a_group_runs_its_members_side_by_side_and_collects_their_results() -> None:
    c = compiled(group(add.s(1, 1), mul.s(3, 3), group(add.s(2, 2), add.s(3, 3))))
    assert edges(c) == {
        "0.add": ([], None),
        "1.mul": ([], None),
        "2.0.add": ([], None),
        "2.1.add": ([], None),
        "result": (
            ["0.add", "1.mul", "2.0.add", "2.1.add"],
            ["0.add", "1.mul", "2.0.add", "2.1.add"],
        ),
    }
    assert tasks_of(c)["result"]["task_type"] == cv.COLLECT
    assert c.result_key == "result"
    assert run(c) == [2, 9, 4, 6]  # a nested group is flattened, as Celery does


def test_a_chord_hands_its_body_the_header_results_in_header_order() -> None:
    c = compiled(chord([add.s(1, 1), add.s(2, 2), add.s(3, 3)], tsum.s()))
    assert edges(c)["3.tsum"] == (["0.add", "1.add", "2.add"], ["0.add", "1.add", "2.add"])
    assert c.result_key == "3.tsum"
    assert run(c) == 12


def test_a_group_followed_by_a_task_in_a_chain_is_a_chord() -> None:
    c = compiled(chain(group(add.s(1, 1), add.s(2, 2)), tsum.s()))  # Celery makes it one
    assert edges(c)[c.result_key] == (["0.add", "1.add"], ["0.add", "1.add"])
    assert run(c) == 6


def test_a_task_then_a_group_gives_every_member_the_result_and_the_list_is_the_result() -> None:
    c = compiled(chain(add.s(1, 2), group(add.s(10), mul.s(10))))
    assert edges(c)["1.0.add"] == (["0.add"], "0.add")
    assert edges(c)["1.1.mul"] == (["0.add"], "0.add")
    assert run(c) == [13, 30]


def test_a_group_then_a_group_hands_every_member_of_the_second_the_first_ones_list() -> None:
    c = compiled(chain(group(add.s(1, 1), add.s(2, 2)), group(tsum.s(), echo.s(7))))
    assert run(c) == [6, {"args": [[2, 4], 7], "kwargs": {}}]


def test_a_group_of_one_in_a_chain_is_its_member() -> None:
    c = compiled(chain(group(add.s(1, 1)), mul.s(5)))
    assert run(c) == 10


def test_nested_chains_flatten_and_chains_in_a_chord_header_give_their_last_result() -> None:
    c = compiled(
        chain(
            chain(add.s(1, 1), mul.s(3)),
            chord([chain(add.s(1), mul.s(2)), add.s(100)], tsum.s()),
            add.s(1),
        )
    )
    assert run(c) == ((6 + 1) * 2) + (6 + 100) + 1
    assert edges(c)["2.2.0.tsum"][1] == ["2.0.1.mul", "2.1.add"]  # Celery flattens, too


def test_partial_arguments_and_keyword_arguments_follow_the_parent_value() -> None:
    c = compiled(chain(add.s(1, 2), echo.s(1, 2, flag=True)))
    assert run(c) == {"args": [3, 1, 2], "kwargs": {"flag": True}}


def test_a_single_task_is_a_ticket_of_one() -> None:
    c = compiled(add.s(2, 3))
    assert [t["key"] for t in c.ticket["tasks"]] == ["add"]
    assert c.result_key == "add" and run(c) == 5


def test_a_signature_in_dict_form_compiles_as_the_object_does() -> None:
    canvas = chain(add.s(1, 2), mul.s(3))
    assert compiled(dict(canvas)).ticket == compiled(canvas).ticket
    by_name = signature("userapp.add", args=(1, 2))
    assert compiled(by_name).ticket["tasks"][0]["payload"]["args"] == [1, 2]


@pytest.mark.parametrize(
    ("canvas", "message"),
    [
        (chain(add.s(1, 2), add.s({1, 2})), "chain[1].args[0] is a set, not JSON"),
        (add.s(1, b"x"), "add.args[1] is a bytes, not JSON"),
        (group(add.s(1, 2), add.s(y=float("nan"))), "group[1].kwargs['y'] is nan"),
        (chord([add.s(1, [1, object()])], tsum.s()), "chord.header[0].args[1][1] is a object"),
        (chain(add.s(1, 2), tsum.s(kw={1: 2})), "chain[1].kwargs['kw'][1] has a key of type int"),
        (add.s("a\x00b", 1), "add.args[0] holds a NUL character"),
        (chord([add.s(1, 2)], tsum.s(float("inf"))), "chord.body.args[0] is inf"),
    ],
)
def test_arguments_that_are_not_json_are_refused_naming_where(canvas: Any, message: str) -> None:
    with pytest.raises(cv.CanvasError) as caught:
        compiled(canvas)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("canvas", "message"),
    [
        (group([]), "an empty group has no task to run"),
        (add.s(1, 2).set(link=mul.s(2)), "option 'link' is not supported"),
        (signature("celery.backend_cleanup"), "Celery's built-in task"),
        (signature("x" * 120), "longer than omoi's task types allow"),
        ({"args": [1]}, "is a dict, not a Celery signature"),
    ],
)
def test_canvases_omoi_cannot_run_are_refused(canvas: Any, message: str) -> None:
    with pytest.raises(cv.CanvasError, match=message.replace("(", r"\(")):
        compiled(canvas)


def test_task_options_map_to_omois_fields() -> None:
    spec = tasks_of(compiled(slow.s(1, 0.1)))["slow"]
    # soft_time_limit (20) is omoi's soft limit; max_retries as declared
    assert (spec["timeout_seconds"], spec["max_retries"]) == (20.0, 2)
    flaky_spec = tasks_of(compiled(flaky.s(1, 1)))["flaky"]
    # retry_backoff=True is Celery's factor 1; retry_backoff_max as declared
    assert (flaky_spec["retry_backoff"], flaky_spec["retry_backoff_max"]) == (1.0, 2.0)
    auto_spec = tasks_of(compiled(auto.s(1)))["auto"]
    assert [auto_spec[f] for f in ("retry_backoff", "retry_backoff_max", "max_retries")] == [
        3.0,
        5.0,
        1,
    ]
    plain = tasks_of(compiled(add.s(1, 2)))["add"]
    assert "timeout_seconds" not in plain and "retry_backoff" not in plain
    assert plain["max_retries"] == 3  # Celery's default, which is omoi's too
    # the signature's options win over the task's; max_retries=None (forever) is omoi's most
    over = tasks_of(compiled(slow.s(1, 0).set(time_limit=7, soft_time_limit=5, max_retries=None)))
    assert (over["slow"]["timeout_seconds"], over["slow"]["max_retries"]) == (5.0, 100)
    only_hard = tasks_of(compiled(add.s(1, 2).set(time_limit=9)))["add"]
    assert only_hard["timeout_seconds"] == 9.0
    with pytest.raises(cv.CanvasError, match=r"add: time_limit='soon'"):
        compiled(add.s(1, 2).set(time_limit="soon"))


def test_capabilities_and_ticket_fields_reach_every_task_and_the_ticket() -> None:
    c = cv.compile_canvas(
        group(add.s(1, 1), add.s(2, 2)), "t", capabilities=["gpu"], priority="HIGH"
    )
    assert {tuple(t["capabilities"]) for t in c.ticket["tasks"]} == {("gpu",)}
    assert c.ticket["priority"] == "HIGH"


def test_build_input_nests_as_the_shape_says() -> None:
    shape = ["a", ["b", "c"]]
    assert cv.build_input(shape, {"a": 1, "b": 2, "c": 3}) == [1, [2, 3]]
    assert cv.keys_of(shape) == ["a", "b", "c"]
