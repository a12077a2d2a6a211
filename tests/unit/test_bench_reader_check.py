"""bench/reader_check.py: each reader's lines counted once, in order, and only those it is due."""

from __future__ import annotations

from bench.reader_check import ReaderCheck, Stats, line_index


def test_a_reader_completes_on_exactly_its_lines_once_in_order() -> None:
    stats = Stats(lines=4)
    stats.expected_complete = 2
    picky, everything = ReaderCheck(stats, [1, 3]), ReaderCheck(stats)
    picky.arrived(1, 10.0)
    picky.arrived(1, 10.5)  # again
    picky.arrived(2, 11.0)  # not its filter's
    assert not picky.finished
    picky.arrived(3, 12.0)
    for index, now in [(0, 1.0), (2, 3.0), (1, 4.0), (3, 5.0)]:
        everything.arrived(index, now)
    assert picky.finished and everything.finished and stats.done.is_set()
    assert (stats.duplicates, stats.unexpected, stats.out_of_order) == (2, 1, 1)
    # `everything` got line 2 before line 1: 2 counts once (out of order), the late 1 as a duplicate.
    assert stats.arrivals == [[1.0], [10.0], [3.0], [12.0, 5.0]]
    assert line_index("bench 12") == 12 and line_index("bench x") is None and line_index("other") is None
