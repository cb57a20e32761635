"""What a log line is: a ``shell`` command's bytes cut into lines as they arrive, and any text
cut into the lines a log stores (one per line, bounded, storable)."""

from __future__ import annotations

from omoi.services.logs import lines_of
from omoi.worker.shell import OUTPUT_LIMIT, Lines


def test_output_becomes_lines_as_each_newline_arrives() -> None:
    got: list[tuple[str, str]] = []
    lines = Lines("stdout", lambda stream, line: got.append((stream, line)))
    lines.feed(b"one\ntw")
    assert got == [("stdout", "one")]  # the unfinished line waits for its newline
    lines.feed(b"o\r\nthree\n\xffbad\n")
    assert got[1:] == [("stdout", "two"), ("stdout", "three"), ("stdout", "\ufffdbad")]
    lines.feed(b"last, without a newline")
    lines.close()
    lines.close()
    assert got[-1] == ("stdout", "last, without a newline") and len(got) == 5


def test_an_endless_line_is_cut_at_the_output_limit_and_the_rest_of_it_dropped() -> None:
    got: list[str] = []
    lines = Lines("stderr", lambda _, line: got.append(line))
    for _ in range(4):
        lines.feed(b"x" * (OUTPUT_LIMIT // 2 + 1))
    lines.feed(b"\nnext\n")
    assert got == ["x" * OUTPUT_LIMIT, "next"]


def test_text_becomes_bounded_storable_lines() -> None:
    assert lines_of("a\nb\r\nc\n", 10) == ["a", "b", "c"]
    assert lines_of("", 10) == [""]
    assert lines_of("0123456789abc", 10) == ["012345678…"]
    assert lines_of("nul\x00here", 20) == ["nul\ufffdhere"]
    assert lines_of("lone \ud800 surrogate", 30) == ["lone ? surrogate"]
