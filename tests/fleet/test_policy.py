"""Rollout policy math, as pure functions: waves, windows, rate, halt, ordering, release choice."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from updater.fleet import policy as pol
from updater.fleet.settings import Channel, HaltRule, RateLimit, Window, parse_settings
from updater.fleet.synthetic import synthetic_release
from updater.version import Version

BOTTLEROCKET = parse_settings({}, Path(".")).groups["default"].waves
names = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)
versions = st.lists(st.integers(0, 20), min_size=1, max_size=3).map(lambda p: ".".join(map(str, p)))


def test_default_waves_are_bottlerocket_s() -> None:
    hours = [(w.after_s / 3600, w.percent) for w in BOTTLEROCKET]
    assert hours == [(1, 1), (4, 5), (24, 15), (48, 40), (96, 60), (120, 90), (144, 100)]


@given(elapsed=st.floats(0, 1e7), later=st.floats(0, 1e7))
def test_wave_share_never_shrinks_as_time_passes(elapsed: float, later: float) -> None:
    first, second = sorted((elapsed, later))
    assert pol.wave_share(BOTTLEROCKET, first) <= pol.wave_share(BOTTLEROCKET, second)


@given(node=names, version=versions, elapsed=st.floats(0, 1e7), later=st.floats(0, 1e7))
def test_a_host_in_the_wave_stays_in_it(
    node: str, version: str, elapsed: float, later: float
) -> None:
    first, second = sorted((elapsed, later))
    if pol.in_wave(node, version, BOTTLEROCKET, first):
        assert pol.in_wave(node, version, BOTTLEROCKET, second)


def test_nobody_starts_before_the_first_wave_and_everybody_after_the_last() -> None:
    nodes = [f"n{i}" for i in range(500)]
    assert not any(pol.in_wave(n, "1.1", BOTTLEROCKET, 3599) for n in nodes)
    assert all(pol.in_wave(n, "1.1", BOTTLEROCKET, 6 * 86400) for n in nodes)


def test_wave_shares_match_the_percentages_and_the_first_hosts_change_per_release() -> None:
    nodes = [f"node-{i}" for i in range(20000)]
    first = {n for n in nodes if pol.in_wave(n, "1.1.0", BOTTLEROCKET, 4 * 3600)}
    assert 0.04 < len(first) / len(nodes) < 0.06  # the 5 % wave
    second = {n for n in nodes if pol.in_wave(n, "1.2.0", BOTTLEROCKET, 4 * 3600)}
    # Independent draws per release: the overlap of two 5 % samples is about 5 % of 5 %.
    assert len(first & second) < len(first) * 0.2


@given(started=st.integers(0, 1000), in_flight=st.integers(0, 1000), limit=st.integers(1, 1000))
def test_rate_allows_a_start_only_below_the_limit_for_both_counts(
    started: int, in_flight: int, limit: int
) -> None:
    allowed = pol.rate_allows(started, in_flight, RateLimit(limit, 3600))
    assert allowed == (started < limit and in_flight < limit)
    if allowed:
        # Taking the slot never pushes either count past the limit.
        assert started + 1 <= limit and in_flight + 1 <= limit


def test_most_started_counts_the_window_rate_allows_counts() -> None:
    # The window at t holds starts with started_at > t - period: one a period apart is out.
    assert pol.most_started_in_any_period([0.0, 10.0, 20.0], 10) == 1
    assert pol.most_started_in_any_period([0.0, 10.0, 20.0], 10.5) == 2
    assert pol.most_started_in_any_period([5.0, 5.0, 5.0, 30.0], 1) == 3
    assert pol.most_started_in_any_period([20.0, 0.0, 19.0, 1.0], 19.5) == 3  # any order
    assert pol.most_started_in_any_period([], 3600) == 0
    assert pol.most_started_in_any_period([1.0, 2.0], 0) == 0  # a window of no length


def _window_counts(started_ats: list[float], period: float) -> list[int]:
    """How many starts the window (t - period, t] holds at every instant the count changes."""
    instants = started_ats + [s + period for s in started_ats]
    return [sum(1 for s in started_ats if t - period < s <= t) for t in instants]


@given(
    started_ats=st.lists(st.integers(0, 200).map(float), max_size=40),
    period=st.integers(0, 60).map(float) | st.floats(0, 100),
)
def test_most_started_matches_counting_every_window(
    started_ats: list[float], period: float
) -> None:
    expected = max(_window_counts(started_ats, period), default=0)
    assert pol.most_started_in_any_period(started_ats, period) == expected


@given(
    asks=st.lists(st.floats(0, 50), max_size=60),
    limit=st.integers(1, 5),
    period=st.sampled_from([1.0, 7.5, 10.0]),
)
def test_starts_rate_allows_admitted_never_fill_a_period_past_the_limit(
    asks: list[float], limit: int, period: float
) -> None:
    # The store's rule, replayed: a start at `now` if fewer than `limit` started after now - period.
    started: list[float] = []
    now = 0.0
    for step in asks:
        now += step
        in_period = sum(1 for s in started if s > now - period)
        if pol.rate_allows(in_period, 0, RateLimit(limit, period)):
            started.append(now)
    most = pol.most_started_in_any_period(started, period)
    assert most <= limit
    if len(asks) >= limit and sum(asks[1:limit]) < period:
        assert most == limit  # the first `limit` asks all fit in one period, and all started


def test_most_in_flight_counts_from_start_to_finish() -> None:
    assert pol.most_in_flight([]) == 0
    assert pol.most_in_flight([(0.0, 10.0), (10.0, 20.0)]) == 1  # finished as the next started
    assert pol.most_in_flight([(0.0, 10.0), (5.0, None), (9.0, 9.5), (30.0, None)]) == 3
    assert pol.most_in_flight([(0.0, None), (100.0, None)]) == 2  # unfinished: still in flight


@given(
    spans=st.lists(
        st.tuples(st.integers(0, 50).map(float), st.none() | st.integers(0, 20).map(float)),
        max_size=30,
    )
)
def test_most_in_flight_matches_counting_at_every_start(
    spans: list[tuple[float, float | None]],
) -> None:
    updates = [(s, None if d is None else s + d) for s, d in spans]
    counts = [sum(1 for s, f in updates if s <= t and (f is None or f > t)) for t, _ in updates]
    assert pol.most_in_flight(updates) == max(counts, default=0)


@given(
    started=st.integers(0, 10000),
    failed=st.integers(0, 10000),
    share=st.floats(0, 1),
    minimum=st.integers(1, 100),
)
def test_halt_exactly_when_the_failure_share_crosses_the_threshold(
    started: int, failed: int, share: float, minimum: int
) -> None:
    failed = min(failed, started)
    halted = pol.should_halt(started, failed, HaltRule(share, minimum))
    assert halted == (started >= minimum and failed > share * started)


@given(
    started=st.integers(1, 1000),
    unexplained=st.integers(0, 1000),
    share=st.floats(0, 1),
)
def test_unexplained_rollbacks_are_judged_by_their_own_threshold(
    started: int, unexplained: int, share: float
) -> None:
    unexplained = min(unexplained, started)
    rule = HaltRule(max_failure_share=0.0, min_updates=1, max_unexplained_share=share)
    assert pol.should_halt(started, 0, rule, unexplained) == (unexplained > share * started)
    # The explained threshold (0: halt on the first) never sees them.
    assert pol.should_halt(started, 1, rule, 0)


def _at(text: str, zone: str = "Europe/Berlin") -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp()


NIGHTS = (
    Window(frozenset({0, 1, 2, 3}), 2 * 60, 4 * 3600),
    Window(frozenset({5}), 22 * 60, 6 * 3600),
)


@pytest.mark.parametrize(
    ("local", "open_"),
    [
        ("2026-11-23 02:00", True),  # Monday, the window opens
        ("2026-11-23 05:59", True),
        ("2026-11-23 06:00", False),  # closed again
        ("2026-11-23 01:59", False),
        ("2026-11-27 03:00", False),  # Friday: no window
        ("2026-11-28 23:30", True),  # Saturday night
        ("2026-11-29 03:59", True),  # ... running past midnight into Sunday
        ("2026-11-29 04:00", False),
        (
            "2026-03-30 02:30",
            True,
        ),  # the Monday after the spring clock change, local time still counts
    ],
)
def test_windows_follow_local_time_in_their_timezone(local: str, open_: bool) -> None:
    assert pol.window_open(NIGHTS, "Europe/Berlin", _at(local)) is open_


@given(now=st.floats(0, 4e9))
def test_no_windows_means_always_open(now: float) -> None:
    assert pol.window_open((), "UTC", now)


@given(now=st.floats(1e9, 3e9), start=st.integers(0, 1439), hours=st.integers(1, 48))
def test_an_every_day_window_is_open_exactly_during_its_span(
    now: float, start: int, hours: int
) -> None:
    window = Window(frozenset(range(7)), start, hours * 3600)
    local = datetime.fromtimestamp(now, ZoneInfo("UTC"))
    minutes = local.hour * 60 + local.minute + local.second / 60 + local.microsecond / 6e7
    since_open = (minutes - start) % 1440
    expected = hours >= 24 or since_open < hours * 60
    assert pol.window_open((window,), "UTC", now) is expected


@given(
    finished=st.one_of(st.none(), st.floats(0, 1e6)), soak=st.floats(0, 1e5), now=st.floats(0, 2e6)
)
def test_a_group_waits_for_its_predecessor_plus_soak(
    finished: float | None, soak: float, now: float
) -> None:
    assert pol.may_start_after(finished, soak, now) == (
        finished is not None and now >= finished + soak
    )


def test_choose_release_takes_the_newest_allowed_one() -> None:
    releases = [synthetic_release(v) for v in ("1.0.0", "1.1.0", "1.2.0", "1.10.0")]
    releases.append(synthetic_release("2.0.0", withdrawn=True))
    stable = Channel("stable", "berth", None)
    V = Version.parse  # versions are parsed where they enter (the check, the settings)
    assert pol.choose_release(releases, stable, V("1.0.0"), ()).version == "1.10.0"
    assert pol.choose_release(releases, stable, V("1.0.0"), (V("1.10.0"),)).version == "1.2.0"
    assert (
        pol.choose_release(releases, Channel("s", "berth", V("1.1.0")), V("1.0.0"), ()).version
        == "1.1.0"
    )
    assert pol.choose_release(releases, stable, V("1.10.0"), ()) is None  # 2.0.0 is withdrawn
    assert pol.choose_release(releases, Channel("s", "other", None), V("1.0.0"), ()) is None


@given(current=versions, bad=st.lists(versions, max_size=5))
def test_choose_release_never_downgrades_or_offers_a_bad_version(
    current: str, bad: list[str]
) -> None:
    releases = [synthetic_release(f"1.{i}.0") for i in range(8)]
    chosen = pol.choose_release(
        releases, Channel("s", "berth", None), Version.parse(current), {Version.parse(b) for b in bad}
    )
    if chosen is not None:
        assert chosen.sort_key > Version.parse(current)
        assert chosen.sort_key not in {Version.parse(b) for b in bad}


def _view(**changes: object) -> pol.RolloutView:
    base = {
        "state": pol.ReleaseState.ACTIVE,
        "started_at": 0.0,
        "halted_reason": None,
    }
    return pol.RolloutView(**{**base, **changes})  # type: ignore[arg-type]


def test_judge_start_walks_through_every_reason() -> None:
    group = parse_settings(
        {"groups": {"g": {"waves": [{"after": "1h", "percent": 100}]}}}, Path(".")
    ).groups["g"]
    decide = pol.judge_start
    assert decide(group, "n", "1.1", None, _view(), 3600).needs_slot
    assert decide(group, "n", "1.1", None, _view(), 10).reason is pol.Reason.WAITING_FOR_WAVE
    assert (
        decide(group, "n", "1.1", None, _view(started_at=None), 9e9).reason
        is pol.Reason.WAITING_FOR_GROUP
    )
    assert (
        decide(group, "n", "1.1", None, _view(halted_reason="x"), 9e9).reason is pol.Reason.HALTED
    )
    assert (
        decide(group, "n", "1.1", None, _view(state=pol.ReleaseState.PAUSED), 9e9).reason
        is pol.Reason.PAUSED
    )
    assert (
        decide(group, "n", "1.1", None, _view(state=pol.ReleaseState.ABORTED), 9e9).reason
        is pol.Reason.ABORTED
    )
    # A host already started keeps going while halted or paused, but never onto a withdrawn release.
    assert decide(group, "n", "1.1", "1.1", _view(halted_reason="x"), 9e9).target == "1.1"
    assert (
        decide(group, "n", "1.1", "1.1", _view(state=pol.ReleaseState.PAUSED), 9e9).target == "1.1"
    )
    assert (
        decide(group, "n", "1.1", "1.1", _view(state=pol.ReleaseState.WITHDRAWN), 9e9).target
        is None
    )


@pytest.mark.parametrize(
    ("state", "action", "result"),
    [
        ("active", "pause", "paused"),
        ("paused", "resume", "active"),
        ("active", "abort", "aborted"),
        ("paused", "abort", "aborted"),
        ("aborted", "withdraw", "withdrawn"),
        ("active", "withdraw", "withdrawn"),
    ],
)
def test_operator_actions_move_a_release_between_named_states(
    state: str, action: str, result: str
) -> None:
    assert pol.admin_transition(pol.ReleaseState(state), action) is pol.ReleaseState(result)


@pytest.mark.parametrize(
    ("state", "action"),
    [
        ("active", "resume"),
        ("aborted", "resume"),
        ("aborted", "pause"),
        ("withdrawn", "resume"),
        ("withdrawn", "withdraw"),
    ],
)
def test_operator_actions_refused_from_the_wrong_state(state: str, action: str) -> None:
    with pytest.raises(pol.ReleaseTransitionError):
        pol.admin_transition(pol.ReleaseState(state), action)
