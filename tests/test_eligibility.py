"""The one rule of which release a host may take (updater.eligibility), as agent and server apply it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from updater.agent.policy import choose_release as agent_choice
from updater.eligibility import newest_eligible, refusal
from updater.fleet.policy import choose_release as fleet_choice
from updater.fleet.settings import Channel
from updater.release import Release
from updater.version import Version


def _release(version: str, *, image_id: str = "berth", withdrawn: bool = False,
             min_version: str | None = None) -> Release:
    return Release(image_id, version, "00" * 32, 1, 1, min_version, withdrawn, {})


V = Version.parse


@pytest.mark.parametrize(
    "release, current, refused, pin, why",
    [
        (_release("1.1"), "1.0", (), None, None),
        (_release("1.1", image_id="other"), "1.0", (), None, "image other is not berth"),
        (_release("1.1", withdrawn=True), "1.0", (), None, "withdrawn"),
        (_release("1.1"), "1.1.0", (), None, "not newer than 1.1.0"),  # trailing zeros do not count
        (_release("1.0"), "1.1", (), None, "not newer than 1.1"),
        (_release("1.1"), "1.0", ("1.1.0",), None, "rolled back on this host before"),
        (_release("1.2"), "1.0", (), "1.1", "beyond the channel's pin 1.1"),
        (_release("1.1"), "1.0", (), "1.1", None),  # the pin itself may be taken
        (_release("2.0", min_version="1.5"), "1.0", (), None, "needs at least 1.5 to update from"),
        (_release("2.0", min_version="1.5"), "1.5", (), None, None),
        (_release("2.0", min_version=""), "1.0", (), None, None),  # an empty floor is none
    ],
)
def test_refusal_names_the_first_reason(release: Release, current: str, refused: tuple[str, ...],
                                        pin: str | None, why: str | None) -> None:
    assert refusal(release, "berth", V(current), {V(r) for r in refused}, V(pin) if pin else None) == why


def test_newest_eligible_orders_numerically_and_keeps_the_first_of_equals() -> None:
    first, same = _release("1.10"), _release("1.10.0")
    releases = [_release("1.2"), first, same, _release("1.9"), _release("3.0", withdrawn=True)]
    assert newest_eligible(releases, "berth", V("1.0"), set()) is first
    assert newest_eligible(releases, "berth", V("1.10"), set()) is None
    assert newest_eligible(releases, "berth", V("1.0"), {V("1.10")}) is releases[3]  # 1.9
    assert newest_eligible(releases, "berth", V("1.0"), set(), V("1.5")) is releases[0]  # 1.2


versions = st.lists(st.integers(0, 4), min_size=1, max_size=3).map(lambda p: ".".join(map(str, p)))


@given(
    # One release per version, as a repository holds them: `berth publish` refuses one that
    # is not newer than the newest, so 1.0 and 1 (equal versions) never both appear.
    offered=st.lists(st.tuples(versions, st.booleans(), st.one_of(st.none(), versions)), max_size=6,
                     unique_by=lambda r: V(r[0])),
    current=versions,
    bad=st.lists(versions, max_size=3),
)
def test_agent_and_server_pick_the_same_release(
    offered: list[tuple[str, bool, str | None]], current: str, bad: list[str]
) -> None:
    releases = [_release(v, withdrawn=w, min_version=m) for v, w, m in offered]
    by_server = fleet_choice(releases, Channel("stable", "berth", None), V(current), {V(b) for b in bad})
    by_agent, _ = agent_choice(releases, "berth", V(current), tuple(map(V, bad)), None)
    assert by_agent is by_server
    if by_server is not None:
        # ... and the agent takes what the server offers it.
        taken, why = agent_choice(releases, "berth", V(current), tuple(map(V, bad)), by_server.sort_key)
        assert why == "offered" and taken is not None and taken.sort_key == by_server.sort_key
