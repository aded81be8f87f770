"""The enrolment rate limit's bucket, on a clock the test holds."""

from __future__ import annotations

import pytest

from updater.fleet.ratelimit import RateLimiter


def test_a_full_minute_at_once_then_one_per_share_of_the_minute() -> None:
    limiter = RateLimiter(per_minute=6)  # a token every 10 s
    assert [limiter.take("10.0.0.1", 0.0) for _ in range(6)] == [0.0] * 6
    assert limiter.take("10.0.0.1", 0.0) == pytest.approx(10.0)
    assert limiter.take("10.0.0.1", 4.0) == pytest.approx(6.0)  # a refusal spends nothing
    assert limiter.take("10.0.0.1", 10.0) == 0.0
    assert limiter.take("10.0.0.1", 10.0) == pytest.approx(10.0)
    assert limiter.take("10.0.0.2", 10.0) == 0.0  # each address has its own bucket


def test_a_quiet_address_refills_only_up_to_a_minute() -> None:
    limiter = RateLimiter(per_minute=2)
    assert limiter.take("a", 0.0) == limiter.take("a", 0.0) == 0.0
    assert [limiter.take("a", 3600.0) for _ in range(3)][:2] == [0.0, 0.0]
    assert limiter.take("a", 3600.0) > 0


def test_a_clock_set_back_refills_nothing() -> None:
    limiter = RateLimiter(per_minute=1)
    assert limiter.take("a", 100.0) == 0.0
    assert limiter.take("a", 50.0) == pytest.approx(60.0)
    assert limiter.take("a", 160.0) == 0.0


def test_memory_is_bounded_and_the_least_recent_address_goes_first() -> None:
    limiter = RateLimiter(per_minute=1, max_keys=2)
    for address in ("a", "b"):
        assert limiter.take(address, 0.0) == 0.0
    assert limiter.take("a", 0.0) > 0  # a is now the most recent
    assert limiter.take("c", 0.0) == 0.0  # b is forgotten
    assert limiter.take("a", 0.0) > 0
    assert limiter.take("b", 0.0) == 0.0  # a full bucket again


@pytest.mark.parametrize("per_minute, max_keys", [(0, 1), (1, 0)])
def test_a_limit_must_let_something_through(per_minute: int, max_keys: int) -> None:
    with pytest.raises(ValueError):
        RateLimiter(per_minute, max_keys)
