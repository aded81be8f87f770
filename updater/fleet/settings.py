"""The fleet server's settings: one table per section, parsed into frozen dataclasses.

``configs/fleet.yaml`` is read by ``load_settings``; every key is declared once
below with its type, default and help. An unknown key or a value of the wrong
type raises ``SettingsError`` naming the file and the dotted key.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from updater.settingrow import NUMBER, Naming, Setting, between, read, typed, worded
from updater.version import Version
from updater.window import DAYS, Window, parse_clock, parse_days

_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class SettingsError(ValueError):
    """A settings file with an unknown key or a value of the wrong type."""


@dataclass(frozen=True)
class Wave:
    after_s: float  # seconds since the group's rollout of a release started
    percent: float  # share of the group allowed to have started by then


@dataclass(frozen=True)
class RateLimit:
    max_updates: int  # updates started per period, and at most this many in flight
    period_s: float


@dataclass(frozen=True)
class HaltRule:
    max_failure_share: float  # rollbacks + failures / updates started
    min_updates: int  # never halt on fewer finished-or-started updates than this
    # Rollbacks no failed check or panic explains (power, hangs, firmware; the agent
    # tried again first) / updates started: judged apart, as they may not be the release's fault.
    max_unexplained_share: float = 1.0


@dataclass(frozen=True)
class Channel:
    name: str
    image_id: str
    pin: Version | None  # a version to stop at; None follows the newest release


@dataclass(frozen=True)
class GroupPolicy:
    name: str
    channel: str
    waves: tuple[Wave, ...]
    rate: RateLimit
    max_concurrent_reboots: int
    lock_ttl_s: float
    lock_log_retention_s: float
    windows: tuple[Window, ...]
    timezone: str
    after: str | None
    soak_s: float
    halt: HaltRule
    token: str | None


@dataclass(frozen=True)
class FleetSettings:
    repository: Path
    admin_token: str | None
    poll_interval_s: int
    update_timeout_s: float
    max_body_bytes: int
    request_timeout_s: float
    max_connections: int
    enrol_rate: int
    channels: Mapping[str, Channel]
    groups: Mapping[str, GroupPolicy]


# --- value parsers: each returns the typed value or raises ValueError(reason) ---


def parse_duration(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    match = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if not match:
        raise ValueError(f"expected a duration like 90s, 30m, 4h, 2d, got {value!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def format_duration(seconds: float) -> str:
    """A duration as parse_duration reads it back, in the largest whole unit: 3600 -> 1h."""
    for unit in ("d", "h", "m"):
        count = seconds / _UNITS[unit]
        if count >= 1 and count == int(count):
            return f"{int(count)}{unit}"
    return f"{seconds:g}s"


def _int(minimum: int) -> Callable[[Any], int]:
    return worded(typed(int, between(minimum, None)), f"expected an integer >= {minimum}, got {{value!r}}")


_SHARE = worded(typed(NUMBER, between(0, 1)), "expected a number between 0 and 1, got {value!r}")
_PERCENT = worded(typed(NUMBER, between(0, 100)), "expected a percentage between 0 and 100, got {value!r}")


def _share(value: Any) -> float:
    return float(_SHARE(value))


def _percent(value: Any) -> float:
    return float(_PERCENT(value))


def _str(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value


def _optional(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else parse(value)


def _timezone(value: Any) -> str:
    try:
        zoneinfo.ZoneInfo(_str(value))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {value!r}") from None
    return value


# --- tables: Setting(key, parser, default, help) rows; a default of REQUIRED must be given ---

REQUIRED = object()
Table = tuple[Setting, ...]

# Bottlerocket's default waves.
DEFAULT_WAVES = [
    {"after": "1h", "percent": 1},
    {"after": "4h", "percent": 5},
    {"after": "1d", "percent": 15},
    {"after": "2d", "percent": 40},
    {"after": "4d", "percent": 60},
    {"after": "5d", "percent": 90},
    {"after": "6d", "percent": 100},
]

WAVE_TABLE: Table = (
    Setting("after", parse_duration, REQUIRED, "time since the group's rollout started"),
    Setting("percent", _percent, REQUIRED, "share of the group allowed to start by then"),
)
WINDOW_TABLE: Table = (
    Setting("days", parse_days, list(DAYS), "days of the week the window opens on"),
    Setting("start", parse_clock, REQUIRED, "local time of day the window opens (HH:MM)"),
    Setting("duration", parse_duration, REQUIRED, "how long it stays open"),
)
RATE_TABLE: Table = (
    Setting("max_updates", _int(1), 100, "updates started per period; also the cap on those in flight"),
    Setting("period", parse_duration, "1h", "the sliding period the limit counts over"),
)
HALT_TABLE: Table = (
    Setting("max_failure_share", _share, 0.05, "halt when rollbacks+failures / started exceeds this"),
    Setting("min_updates", _int(1), 5, "do not judge a release on fewer started updates"),
    Setting("max_unexplained_share", _share, 0.25,
     "halt when rollbacks no failed check or panic explains / started exceeds this"),
)
CHANNEL_TABLE: Table = (
    Setting("image_id", _str, "berth", "the image whose releases this channel carries"),
    Setting("pin", _optional(Version.parse), None, "stop at this version (None: newest release)"),
)
GROUP_TABLE: Table = (
    Setting("channel", _str, "stable", "the channel this group follows"),
    Setting("waves", list, DEFAULT_WAVES, "list of {after, percent}; Bottlerocket's waves by default"),
    Setting("rate", dict, {}, "rate limit {max_updates, period}"),
    Setting("max_concurrent_reboots", _int(1), 1, "FleetLock semaphore size"),
    Setting("lock_ttl", parse_duration, "1h", "an unreleased reboot lock expires after this"),
    Setting("lock_log_retention", parse_duration, "90d", "reboot-lock events older than this are dropped"),
    Setting("windows", list, [], "maintenance windows [{days, start, duration} or HH:MM-HH:MM daily]; none: always open"),
    Setting("timezone", _timezone, "UTC", "timezone the windows are in"),
    Setting("after", _optional(_str), None, "group that must finish a release before this one starts"),
    Setting("soak", parse_duration, "0s", "wait this long after `after` finished"),
    Setting("halt", dict, {}, "automatic halt {max_failure_share, min_updates, max_unexplained_share}"),
    Setting("token", _optional(_str), None, "bearer token to enrol here (and FleetLock of unenrolled ids)"),
)
TOP_TABLE: Table = (
    Setting("repository", _str, "repository", "TUF repository directory, served under /repo"),
    Setting("admin_token", _optional(_str), None, "bearer token of the admin API (None: admin API off)"),
    Setting("poll_interval", parse_duration, "5m", "how often agents are told to ask again"),
    Setting("update_timeout", parse_duration, "1d", "a started update with no result stops counting"),
    Setting("max_body_bytes", _int(256), 65536, "larger request bodies are refused with 413"),
    Setting("request_timeout", parse_duration, "10s", "a request's head and body must arrive within this"),
    Setting("max_connections", _int(1), 1024, "open connections per server process; more are closed"),
    Setting("enrol_rate", _int(0), 120, "enrolments a minute per client address and server process; more: 429"),
    Setting("channels", dict, {"stable": {}}, "channel name -> {image_id, pin}"),
    Setting("groups", dict, {"default": {}}, "group name -> policy (see the group keys)"),
)


def _naming(rows: Mapping[str, Setting]) -> Naming:
    """The fleet's words: the dotted key first (``where`` ends in a dot), then why."""
    return Naming(
        unknown=lambda where, key: f"{where}{key}: unknown key (known: {', '.join(sorted(rows))})",
        wrong_type=lambda where, key, error: f"{where}{key}: expected a {error.kind_name}, got {error.value!r}",
        refused=lambda where, key, why: f"{where}{key}: {why}",
    )


def _table(data: Any, table: Table, where: str) -> dict[str, Any]:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SettingsError(f"{where or 'top level'}: expected a mapping")
    rows = {row.name: row for row in table}
    naming = _naming(rows)
    for key in data:
        if key not in rows:
            raise SettingsError(naming.unknown(where, key))
    out = {}
    for row in table:
        if row.name not in data and row.default is REQUIRED:
            raise SettingsError(f"{where}{row.name}: missing")
        out[row.name] = read(rows, row.name, data.get(row.name, row.default), where, naming, SettingsError)
    return out


def _list(items: list[Any], table: Table, where: str) -> list[dict[str, Any]]:
    return [_table(item, table, f"{where}[{i}].") for i, item in enumerate(items)]


def _windows(items: list[Any], where: str) -> tuple[Window, ...]:
    """Each window a mapping {days, start, duration} or the agent's daily ``HH:MM-HH:MM``."""
    windows = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            try:
                windows.append(Window.parse(item))
            except ValueError as error:
                raise SettingsError(f"{where}[{i}]: {error}") from None
            continue
        w = _table(item, WINDOW_TABLE, f"{where}[{i}].")
        windows.append(Window(w["days"], w["start"], w["duration"]))
    return tuple(windows)


def _group(name: str, data: Any, channels: Mapping[str, Channel], groups: set[str]) -> GroupPolicy:
    where = f"groups.{name}."
    raw = _table(data, GROUP_TABLE, where)
    waves = tuple(
        Wave(w["after"], w["percent"]) for w in _list(raw["waves"], WAVE_TABLE, where + "waves")
    )
    if not waves or max(w.percent for w in waves) < 100:
        raise SettingsError(f"{where}waves: the last wave must reach 100 percent")
    if raw["channel"] not in channels:
        raise SettingsError(f"{where}channel: unknown channel {raw['channel']!r}")
    if raw["after"] is not None and (raw["after"] not in groups or raw["after"] == name):
        raise SettingsError(f"{where}after: unknown group {raw['after']!r}")
    rate = _table(raw["rate"], RATE_TABLE, where + "rate.")
    halt = _table(raw["halt"], HALT_TABLE, where + "halt.")
    return GroupPolicy(
        name=name,
        channel=raw["channel"],
        waves=tuple(sorted(waves, key=lambda w: w.after_s)),
        rate=RateLimit(rate["max_updates"], rate["period"]),
        max_concurrent_reboots=raw["max_concurrent_reboots"],
        lock_ttl_s=raw["lock_ttl"],
        lock_log_retention_s=raw["lock_log_retention"],
        windows=_windows(raw["windows"], where + "windows"),
        timezone=raw["timezone"],
        after=raw["after"],
        soak_s=raw["soak"],
        halt=HaltRule(halt["max_failure_share"], halt["min_updates"], halt["max_unexplained_share"]),
        token=raw["token"],
    )


def parse_settings(data: Any, base_dir: Path) -> FleetSettings:
    raw = _table(data, TOP_TABLE, "")
    channels = {
        name: Channel(name, **_table(value, CHANNEL_TABLE, f"channels.{name}."))
        for name, value in raw["channels"].items()
    }
    groups = {
        name: _group(name, value, channels, set(raw["groups"]))
        for name, value in raw["groups"].items()
    }
    _check_no_cycle(groups)
    repository = Path(raw["repository"])
    return FleetSettings(
        repository=(base_dir / repository).resolve(),
        admin_token=raw["admin_token"],
        poll_interval_s=max(1, int(raw["poll_interval"])),
        update_timeout_s=raw["update_timeout"],
        max_body_bytes=raw["max_body_bytes"],
        request_timeout_s=max(0.1, raw["request_timeout"]),
        max_connections=raw["max_connections"],
        enrol_rate=raw["enrol_rate"],
        channels=channels,
        groups=groups,
    )


def _check_no_cycle(groups: Mapping[str, GroupPolicy]) -> None:
    for name in groups:
        seen, current = {name}, groups[name].after
        while current is not None:
            if current in seen:
                raise SettingsError(f"groups.{name}.after: groups wait on each other in a cycle")
            seen.add(current)
            current = groups[current].after


def load_settings(path: Path | None) -> FleetSettings:
    """Read a fleet.yaml (None: the built-in defaults, relative to the working directory)."""
    import yaml

    if path is None:
        return parse_settings({}, Path.cwd())
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as error:
        raise SettingsError(f"{path}: cannot read ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise SettingsError(f"{path}: not valid YAML ({error})") from None
    try:
        return parse_settings(data, path.resolve().parent)
    except SettingsError as error:
        raise SettingsError(f"{path}: {error}") from None
