"""`make test`'s two halves end in one exit code (scripts/test.py)."""

from __future__ import annotations

import pytest

from scripts.test import NO_TESTS, combined


@pytest.mark.parametrize(("codes", "expected"), [
    ((0, 0), 0),
    ((0, NO_TESTS), 0),  # PYTEST_ARGS named only unit tests: the slow half had none
    ((NO_TESTS, 0), 0),
    ((NO_TESTS, NO_TESTS), NO_TESTS),  # nothing selected anywhere is still an error
    ((1, 0), 1),
    ((0, 1), 1),  # a failing fast half fails the run, though the slow half passed
    ((NO_TESTS, 2), 2),
    ((1, 2), 1),
])
def test_a_failure_in_either_half_fails_the_run(codes: tuple[int, int], expected: int) -> None:
    assert combined(codes) == expected
