"""What a job shows Flower of its attempt: the lineage it links and its ticket's title."""

from __future__ import annotations

from omoi.domain.jobs import TITLE_CHARS, clipped, job_id, lineage


def test_a_job_is_rooted_at_its_tickets_first_job_and_parented_upstream() -> None:
    root = job_id("first", 1)
    assert root == "first:1"
    assert lineage(root, root, None) == (root, None)  # the first job has no parent
    assert lineage("first:2", root, None) == (root, root)  # its retry hangs under it
    assert lineage("b:1", root, "a:3") == (root, "a:3")  # released by a's third attempt
    assert lineage("c:1", root, None) == (root, root)  # nothing upstream: under the root
    assert lineage("old:1", None, None) == ("old:1", None)  # a ticket from before lineage


def test_a_long_title_is_clipped_and_says_so() -> None:
    assert clipped("Ship it") == "Ship it"
    exact = "x" * TITLE_CHARS
    assert clipped(exact) == exact
    longer = clipped(exact + "y")  # the database hands over one character more than shown
    assert (len(longer), longer[-1]) == (TITLE_CHARS, "…")
