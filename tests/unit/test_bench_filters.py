"""bench/filters.py: the filter rule each reader's expected lines are computed by (docs/protocol.md
section 7, written a second time on purpose), and a plan every load-generator process derives alike."""

from __future__ import annotations

from bench.filters import LineSpec, ReaderFilter, expected_lines, matches, random_lines, reader_filters


def test_the_filter_rule_is_the_protocols() -> None:
    politics = ReaderFilter(("politics",), "routine")
    urgent = ReaderFilter((), "urgent")
    assert matches(politics, LineSpec(("mena", "politics"), "routine"))
    assert not matches(politics, LineSpec(("mena",), "flash"))
    assert not matches(politics, LineSpec((), "flash"))  # no topics: only readers without a topic filter
    assert matches(urgent, LineSpec((), "flash"))
    assert matches(urgent, LineSpec(("sports",), "urgent"))
    assert not matches(urgent, LineSpec(("sports",), "routine"))
    assert not matches(ReaderFilter(("sports",), "flash"), LineSpec(("sports",), "urgent"))
    assert ReaderFilter(("asia", "mena"), "flash").query() == "&min_urgency=flash&topics=asia,mena"


def test_the_plan_is_the_same_in_every_process_and_expects_only_matching_lines() -> None:
    topics = ["politics", "sports", "mena", "asia"]
    assert reader_filters(7, 50, topics) == reader_filters(7, 50, topics)
    assert random_lines(7, 20, topics) == random_lines(7, 20, topics)
    assert reader_filters(7, 50, topics) != reader_filters(8, 50, topics)
    lines = [
        LineSpec(("sports",), "routine"),
        LineSpec(("politics",), "flash"),
        LineSpec(("sports",), "flash"),
    ]
    assert expected_lines(ReaderFilter(("sports",), "routine"), lines) == [0, 2]
    assert expected_lines(ReaderFilter(("sports", "politics"), "flash"), lines) == [1, 2]
