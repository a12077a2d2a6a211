"""bench/round2.py reads bench.burst's printed table by its column names, so that the burst row
follows that table whatever order its columns come in, and is left out (not invented) without it."""

from __future__ import annotations

from bench.round2 import burst_cells

REPORT = """### `python -m bench.burst --subscribers 250 --lines 200 --editors 4`

| readers | first POST sent → last answered | last delivery after it | lost | closed (seen / slow_closed) |
|---|---|---|---|---|
| no readers | 0.57 s | nan s | 0 | 0 / 0 |
| unfiltered | 3.62 s | 0.01 s | 0 | 0 / 0 |
| random filters | 9.99 s | 9.99 s | 9 | 9 / 9 |
"""


def test_the_row_with_readers_is_read_by_column_name_not_the_posting_floor() -> None:
    cells = burst_cells(REPORT)
    assert cells is not None
    assert cells["first POST sent → last answered"] == "3.62 s"
    assert cells["last delivery after it"] == "0.01 s"
    assert (cells["lost"], cells["closed (seen / slow_closed)"]) == ("0", "0 / 0")


def test_no_table_no_row() -> None:
    assert burst_cells("Traceback (most recent call last):\n  ...") is None
