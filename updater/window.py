"""Maintenance windows: the one type the agent (standalone reboots) and the fleet
server (a group's rollout) both keep, and its parsers.

A window opens on some days of the week at a time of day and stays open for a
duration, in the wall-clock time of a timezone (it may run past midnight). Two
ways to write one: the agent's daily ``02:00-04:00`` (every day, UTC on the
agent, the group's timezone in the fleet's windows list), and the fleet's
mapping ``{days, start, duration}`` (its keys parsed by the fleet's settings
table with ``parse_days`` / ``parse_clock`` below). Pure stdlib; shipped on hosts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
EVERY_DAY = frozenset(range(7))
# The fleet's clock rule (\d) and the agent's ([0-9]) were two; this is their union.
_CLOCK_RULE = r"([01]\d|2[0-3]):([0-5]\d)"
_CLOCK = re.compile(_CLOCK_RULE)
_DAILY = re.compile(f"{_CLOCK_RULE}-{_CLOCK_RULE}")


@dataclass(frozen=True)
class Window:
    days: frozenset[int]  # the days it opens on, 0 = Monday
    start_min: int  # minutes after local midnight
    duration_s: float

    @classmethod
    def parse(cls, text: str) -> Window:
        """The daily form ``HH:MM-HH:MM``; an end before the start runs past midnight."""
        match = _DAILY.fullmatch(text) if isinstance(text, str) else None
        if not match:
            raise ValueError(f"maintenance window must look like 02:00-04:00, got {text!r}")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        start, end = h1 * 60 + m1, h2 * 60 + m2
        return cls(EVERY_DAY, start, ((end - start) % 1440) * 60.0)

    def __str__(self) -> str:
        end = (self.start_min + int(self.duration_s // 60)) % 1440
        daily = f"{self.start_min // 60:02d}:{self.start_min % 60:02d}-{end // 60:02d}:{end % 60:02d}"
        if self.days == EVERY_DAY and self.duration_s < 86400:
            return daily
        return f"{','.join(DAYS[d] for d in sorted(self.days))} {daily}"

    def contains(self, moment: datetime) -> bool:
        """Whether the window is open at ``moment``, in the wall-clock time of its timezone."""
        return self._covers(moment, moment.timestamp())

    def _covers(self, local: datetime, instant: float) -> bool:
        # A window may run past midnight, so an earlier day's opening can still cover now.
        for days_back in range(1 + int(self.duration_s // 86400) + 1):
            day = local.date() - timedelta(days=days_back)
            if day.weekday() not in self.days:
                continue
            opens = datetime(day.year, day.month, day.day, tzinfo=local.tzinfo) + timedelta(
                minutes=self.start_min
            )
            if opens.timestamp() <= instant < opens.timestamp() + self.duration_s:
                return True
        return False


def window_open(windows: Iterable[Window], timezone: str, now: float) -> bool:
    """True if ``now`` (epoch seconds) falls in one of the windows, in ``timezone``; no windows means always."""
    windows = tuple(windows)
    if not windows:
        return True
    local = datetime.fromtimestamp(now, ZoneInfo(timezone))
    return any(window._covers(local, now) for window in windows)


def parse_clock(value: Any) -> int:
    """A time of day ``HH:MM`` as minutes after midnight."""
    match = _CLOCK.fullmatch(value) if isinstance(value, str) else None
    if not match:
        raise ValueError(f"expected a time of day like 02:30, got {value!r}")
    return int(match.group(1)) * 60 + int(match.group(2))


def parse_days(value: Any) -> frozenset[int]:
    if not isinstance(value, list) or not value or any(d not in DAYS for d in value):
        raise ValueError(f"expected a list of days from {', '.join(DAYS)}, got {value!r}")
    return frozenset(DAYS.index(d) for d in value)
