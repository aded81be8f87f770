"""The one maintenance-window type (updater.window) both the agent and the fleet keep."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from updater.agent.settings import check_settings
from updater.fleet.settings import SettingsError, parse_settings
from updater.window import EVERY_DAY, Window, window_open

clocks = st.tuples(st.integers(0, 23), st.integers(0, 59)).map(lambda t: f"{t[0]:02d}:{t[1]:02d}")


@given(start=clocks, end=clocks, now=st.floats(1e9, 3e9))
def test_the_daily_form_is_an_every_day_window_in_utc(start: str, end: str, now: float) -> None:
    window = Window.parse(f"{start}-{end}")
    assert window.days == EVERY_DAY and str(window) == f"{start}-{end}"
    # The agent asks contains(); the fleet asks window_open(): one answer.
    assert window.contains(datetime.fromtimestamp(now, UTC)) is window_open((window,), "UTC", now)


def test_a_window_of_some_days_prints_them() -> None:
    assert str(Window(frozenset({0, 5}), 22 * 60, 6 * 3600)) == "mon,sat 22:00-04:00"


def test_the_fleet_takes_both_forms_and_the_agent_its_own() -> None:
    data = {"groups": {"default": {"windows": ["02:00-04:00", {"start": "02:00", "duration": "2h"}]}}}
    daily, mapped = parse_settings(data, Path(".")).groups["default"].windows
    assert daily == mapped == Window(EVERY_DAY, 120, 7200.0)
    assert check_settings({"maintenance_window": "02:00-04:00"}, "test") == {"maintenance_window": "02:00-04:00"}


def test_a_bad_daily_window_in_the_fleet_names_its_place() -> None:
    with pytest.raises(SettingsError, match=r"groups\.default\.windows\[1\]: maintenance window must look like"):
        parse_settings({"groups": {"default": {"windows": ["02:00-04:00", "2-4"]}}}, Path("."))
