"""The suite's QEMU share: overlapping VMs count once, gaps not at all."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from qemu import budget


def test_overlapping_and_nested_intervals_count_once() -> None:
    assert budget.covered([]) == 0
    assert budget.covered([(0, 10), (5, 15), (6, 7), (20, 21)]) == 16


@given(st.lists(st.tuples(st.integers(0, 100), st.integers(0, 20)), max_size=12))
def test_the_union_is_what_a_timeline_of_seconds_shows(spans: list[tuple[int, int]]) -> None:
    intervals = [(start, start + length) for start, length in spans]
    seconds = {t for start, end in intervals for t in range(start, end)}
    assert budget.covered(intervals) == len(seconds)
