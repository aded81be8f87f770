"""The admin API's answers as typed, frozen documents, and their JSON schemas.

Each handler renders one of these (``to_json``), and updater.fleet.openapi
publishes ``schema_of`` each, so the schema is generated from the very type the
handler fills in; schemathesis then checks every answer against it
(tests/fleet/test_openapi_fuzz.py). A field's JSON type follows its annotation;
``name``/``version`` fields carry the wire module's patterns.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any

from updater import wire
from updater.fleet.hoststate import FINISHING, UNEXPLAINED_ROLLBACK, HostState
from updater.fleet.locks import LockEventKind, LockOutcome
from updater.fleet.policy import ReleaseState
from updater.version import VERSION_PATTERN

NAME_SCHEMA: dict[str, Any] = {"type": "string", "pattern": wire.NAME_PATTERN}
VERSION_SCHEMA: dict[str, Any] = {"type": "string", "pattern": VERSION_PATTERN}
# The outcomes a counted update can finish with (None while it is in flight).
OUTCOMES = tuple(sorted({e.value for e in FINISHING} | {UNEXPLAINED_ROLLBACK}))


# Annotations that carry their own schema (a pattern, a minimum, an enum), by name:
# an annotation's extra must be hashable, a schema is a dict.
_SCHEMAS: dict[str, dict[str, Any]] = {
    "name": NAME_SCHEMA,
    "version": VERSION_SCHEMA,
    "positive": {"type": "integer", "minimum": 1},
    "seconds": {"type": "number", "minimum": 0},
    "outcome": {"type": "string", "enum": list(OUTCOMES)},
}
Name = Annotated[str, "name"]
VersionText = Annotated[str, "version"]


class DocumentError(ValueError):
    """An answer that is not the document it should be (a reader's server is of another make)."""


DocumentT = typing.TypeVar("DocumentT", bound="Document")


class Document:
    """A frozen dataclass the admin API answers with, and its readers read."""

    def to_json(self) -> dict[str, Any]:
        assert dataclasses.is_dataclass(self)
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> typing.Self:
        """The document ``data`` holds; DocumentError naming the field if it holds another."""
        document: typing.Self = _read(cls, data, cls.__name__)
        return document


# --- GET /admin/status ---


@dataclass(frozen=True)
class RolloutStatus(Document):
    version: VersionText
    started_at: float
    finished_at: float | None
    halted_reason: str | None
    wave_percent: float


@dataclass(frozen=True)
class GroupStatus(Document):
    hosts_by_state: dict[str, int]
    hosts_by_version: dict[str, int]
    locks_held: list[str]
    max_concurrent_reboots: int
    rate_used: int
    rate_limit: int
    rollouts: list[RolloutStatus]


@dataclass(frozen=True)
class ReleaseStatus(Document):
    """A release's state, as an operator (or the halt) left it; also the answer to an action."""

    image_id: Name
    version: VersionText
    state: ReleaseState


@dataclass(frozen=True)
class CatalogEntry(Document):
    image_id: Name
    version: VersionText
    withdrawn: bool


@dataclass(frozen=True)
class Status(Document):
    now: float
    groups: dict[str, GroupStatus]
    releases: list[ReleaseStatus]
    catalog: list[CatalogEntry]


# --- GET /admin/hosts/{node_id}, /admin/timeline/{version} ---


@dataclass(frozen=True)
class ReportRecord(Document):
    seq: int
    at: float
    group: Name
    event: wire.ReportEvent
    version: str  # as the agent sent it: empty when it had none
    from_version: str
    detail: str


@dataclass(frozen=True)
class HostEvent(Document):
    at: float
    event: str
    detail: str


@dataclass(frozen=True)
class TransferRecord(Document):
    """What one update cost on the wire, from the host's staged report (wire.Transfer)."""

    seq: int
    version: VersionText
    path: str  # "full" or "delta"
    bytes_fetched: int
    bytes_full: int


@dataclass(frozen=True)
class HostHistory(Document):
    node_id: Name
    group: str | None  # None: not enrolled
    reports: list[ReportRecord]
    events: list[HostEvent]
    transfers: list[TransferRecord]


@dataclass(frozen=True)
class TimelineEvent(Document):
    at: float
    group: Name
    event: wire.ReportEvent


@dataclass(frozen=True)
class Timeline(Document):
    version: str
    events: list[TimelineEvent]


# --- GET /admin/locks/{group}, /admin/updates/{group} ---


@dataclass(frozen=True)
class LockLogEvent(Document):
    at: float
    node_id: Name
    event: LockEventKind


@dataclass(frozen=True)
class LockLog(Document):
    group: Name
    max_concurrent_reboots: Annotated[int, "positive"]
    events: list[LockLogEvent]


@dataclass(frozen=True)
class Rate(Document):
    max_updates: Annotated[int, "positive"]
    period_s: Annotated[float, "seconds"]


@dataclass(frozen=True)
class CountedUpdate(Document):
    node_id: Name
    version: VersionText
    started_at: float
    finished_at: float | None
    outcome: Annotated[str, "outcome"] | None


@dataclass(frozen=True)
class UpdateLog(Document):
    group: Name
    rate: Rate
    updates: list[CountedUpdate]


# --- the admin actions, and the agent's report ---


@dataclass(frozen=True)
class Reloaded(Document):
    groups: list[str]
    releases: list[str]


@dataclass(frozen=True)
class HostMoved(Document):
    node_id: Name
    group: Name
    was: Name


@dataclass(frozen=True)
class HostForgotten(Document):
    node_id: Name
    group: Name
    forgotten: bool


@dataclass(frozen=True)
class ReportAccepted(Document):
    accepted: bool
    state: HostState


@dataclass(frozen=True)
class LockAnswer(Document):
    outcome: LockOutcome


# --- schemas, and reading a document back ---


def _schema_of_type(hint: Any) -> dict[str, Any]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        return dict(_SCHEMAS[args[1]])
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"only Optional unions have a schema here, not {hint}")
        return {**_schema_of_type(inner[0]), "nullable": True}
    if origin is list:
        return {"type": "array", "items": _schema_of_type(args[0])}
    if origin is dict:
        return {"type": "object", "additionalProperties": _schema_of_type(args[1])}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return {"type": "string", "enum": [m.value for m in hint]}
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return schema_of(hint)
    simple = {str: "string", int: "integer", float: "number", bool: "boolean"}
    if hint in simple:
        return {"type": simple[hint]}
    raise TypeError(f"no schema for {hint!r}")


@functools.cache
def schema_of(cls: type) -> dict[str, Any]:
    """The JSON schema of a document class: every field required, nothing else allowed."""
    hints = typing.get_type_hints(cls, include_extras=True)
    properties = {f.name: _schema_of_type(hints[f.name]) for f in dataclasses.fields(cls)}
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def _read(hint: Any, data: Any, where: str) -> Any:
    """``data`` as a value of ``hint`` (the inverse of ``to_json``)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        return _read(args[0], data, where)
    if origin in (typing.Union, types.UnionType):
        if data is None:
            return None
        return _read(next(a for a in args if a is not type(None)), data, where)
    if origin is list:
        if not isinstance(data, list):
            raise DocumentError(f"{where}: expected a list")
        return [_read(args[0], item, f"{where}[{i}]") for i, item in enumerate(data)]
    if origin is dict:
        if not isinstance(data, dict):
            raise DocumentError(f"{where}: expected an object")
        return {str(k): _read(args[1], v, f"{where}.{k}") for k, v in data.items()}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(data)
        except ValueError:
            raise DocumentError(f"{where}: {data!r} is not one of {[m.value for m in hint]}") from None
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(data, dict):
            raise DocumentError(f"{where}: expected an object")
        hints = typing.get_type_hints(hint, include_extras=True)
        fields = [f.name for f in dataclasses.fields(hint)]
        missing = [name for name in fields if name not in data]
        if missing:
            raise DocumentError(f"{where}: missing {', '.join(missing)}")
        return hint(**{name: _read(hints[name], data[name], f"{where}.{name}") for name in fields})
    allowed: tuple[type, ...] = (int, float) if hint is float else (hint,)
    if not isinstance(data, allowed) or (isinstance(data, bool) and hint is not bool):
        raise DocumentError(f"{where}: expected {hint.__name__}, got {data!r}")
    return data
