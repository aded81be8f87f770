"""The wire types agent and fleet server both speak, and nothing else.

Pure stdlib (the agent runs on the host image's Debian python3). Every type
parses from a JSON-decoded ``dict`` with ``from_json`` — which raises
``WireError`` naming the offending field — and renders with ``to_json``.

HTTP surface (served by ``berth serve``, used by ``berth agent``):
  POST /v1/enrol          Enrolment    -> {"node_id", "group", "credential"}
  POST /v1/update/check   UpdateCheck  -> UpdateDecision
(every call but the first carries the host's credential in HOST_CREDENTIAL_HEADER)
  POST /v1/reports        Report       -> {"accepted": true}
  POST /v1/pre-reboot     FleetLock body (header fleet-lock-protocol: true)
  POST /v1/steady-state   FleetLock body
  POST /v1/swarm/tokens   SwarmTokens  -> {"accepted": true} (a group's first swarm manager)
  POST /v1/swarm/join     SwarmJoin    -> SwarmTokens (a host of that group joining)
  GET  /repo/...          the TUF repository (metadata/ and targets/)
FleetLock errors are ``{"kind": "...", "value": "..."}`` (see FleetLockError).
"""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass, field
from typing import Any, Self

from updater.version import Version, VersionError

ENROL_PATH = "/v1/enrol"
CHECK_PATH = "/v1/update/check"
REPORTS_PATH = "/v1/reports"
PRE_REBOOT_PATH = "/v1/pre-reboot"
STEADY_STATE_PATH = "/v1/steady-state"
SWARM_TOKENS_PATH = "/v1/swarm/tokens"
SWARM_JOIN_PATH = "/v1/swarm/join"
REPO_PATH = "/repo"
FLEETLOCK_HEADER = "fleet-lock-protocol"
HOST_CREDENTIAL_HEADER = "berth-host-credential"

# Matched whole (re.fullmatch: "$" alone would let a trailing newline through);
# the anchored form is what the OpenAPI schema publishes (versions: updater.version).
_NAME_RULE = r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}"
NAME_PATTERN = f"^{_NAME_RULE}$"
_NAME = re.compile(_NAME_RULE)
# A host's Docker Swarm role, on its checks (absent: none, or an agent that predates it).
SWARM_ROLES = ("manager", "worker")
# `docker swarm join-token -q` prints SWMTKN-1-<cluster CA digest>-<secret> (base 36).
_JOIN_TOKEN_RULE = r"SWMTKN-1-[0-9a-z]{1,100}-[0-9a-z]{1,100}"
# A manager's address as `docker swarm join` takes it: host or [IPv6], then :port.
_ADDR_RULE = r"([A-Za-z0-9][A-Za-z0-9.-]{0,252}|\[[0-9A-Fa-f:.]{2,45}\]):[0-9]{1,5}"
JOIN_TOKEN_PATTERN, ADDR_PATTERN = f"^{_JOIN_TOKEN_RULE}$", f"^{_ADDR_RULE}$"
_JOIN_TOKEN, _ADDR = re.compile(_JOIN_TOKEN_RULE), re.compile(_ADDR_RULE)
# seq is a BIGINT in the server's database.
MAX_SEQ = 2**63 - 1


class WireError(ValueError):
    """A message that does not have the shape this module defines."""


def _object(data: Any, known: set[str], what: str = "body") -> dict[str, Any]:
    """``data`` as a JSON object with no field outside ``known``: the first check of every type."""
    if not isinstance(data, dict):
        raise WireError(f"{what} must be a JSON object")
    unknown = set(data) - known
    if unknown:
        raise WireError(f"unknown field(s): {', '.join(sorted(map(str, unknown)))}")
    return data


def _field(data: dict[str, Any], name: str, kind: type, *, required: bool = True) -> Any:
    if name not in data or data[name] is None:
        if required:
            raise WireError(f"missing field '{name}'")
        return None
    value = data[name]
    # bool is an int in Python; a JSON true is never a count.
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise WireError(f"field '{name}' must be {kind.__name__}")
    return value


def _name(data: dict[str, Any], name: str) -> str:
    value = _field(data, name, str)
    if not _NAME.fullmatch(value):
        raise WireError(f"field '{name}' must match {NAME_PATTERN}")
    return value


def parse_version(text: Any) -> Version:
    """``Version.parse`` for a message: a bad version is a WireError like any bad field."""
    try:
        return Version.parse(text)
    except VersionError as error:
        raise WireError(str(error)) from None


def _version(data: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = _field(data, name, str, required=required)
    if value is not None:
        parse_version(value)
    return value


def is_name(text: str) -> bool:
    """A node id, group or image id as every endpoint accepts it."""
    return isinstance(text, str) and _NAME.fullmatch(text) is not None


@dataclass(frozen=True)
class Enrolment:
    """A host's first contact: it claims a node id in a group and gets its credential back."""

    node_id: str
    group: str

    @classmethod
    def from_json(cls, data: Any) -> Self:
        data = _object(data, {"node_id", "group"})
        return cls(node_id=_name(data, "node_id"), group=_name(data, "group"))

    def to_json(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "group": self.group}


@dataclass(frozen=True)
class UpdateCheck:
    """The agent asks: may I update now, and to what?"""

    node_id: str
    group: str
    current_version: str
    image_id: str = "berth"
    # Versions this node saw roll back; the server never offers them to it again.
    bad_versions: tuple[str, ...] = ()
    # Its swarm role: the server keeps the managers of a group in quorum through reboots.
    swarm_role: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> UpdateCheck:
        data = _object(data, {"node_id", "group", "current_version", "image_id", "bad_versions", "swarm_role"})
        role = _field(data, "swarm_role", str, required=False)
        if role is not None and role not in SWARM_ROLES:
            raise WireError(f"field 'swarm_role' must be one of {', '.join(SWARM_ROLES)}")
        bad = _field(data, "bad_versions", list, required=False) or []
        if len(bad) > 1000:
            raise WireError("field 'bad_versions' holds more than 1000 versions")
        for version in bad:
            if not isinstance(version, str):
                raise WireError("field 'bad_versions' must be a list of versions")
            parse_version(version)
        return cls(
            node_id=_name(data, "node_id"),
            group=_name(data, "group"),
            current_version=_version(data, "current_version") or "",
            image_id=_name(data, "image_id") if "image_id" in data else "berth",
            bad_versions=tuple(bad),
            swarm_role=role,
        )

    # The versions as the server's rules take them, parsed once per check.
    @functools.cached_property
    def current(self) -> Version:
        return Version.parse(self.current_version)

    @functools.cached_property
    def refused(self) -> frozenset[Version]:
        return frozenset(Version.parse(v) for v in self.bad_versions)

    def to_json(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "group": self.group,
            "current_version": self.current_version,
            "image_id": self.image_id,
            "bad_versions": list(self.bad_versions),
            # Sent only when set: a host in no swarm sends what the previous release sent.
            **({"swarm_role": self.swarm_role} if self.swarm_role else {}),
        }


@dataclass(frozen=True)
class UpdateDecision:
    """The server's answer: a target version, or none with the reason why."""

    target_version: str | None
    reason: str
    # When the agent should ask again; the server may slow a large fleet down.
    poll_after_s: int = 300

    @classmethod
    def from_json(cls, data: Any) -> UpdateDecision:
        data = _object(data, {"target_version", "reason", "poll_after_s"})
        poll = _field(data, "poll_after_s", int, required=False)
        return cls(
            target_version=_version(data, "target_version", required=False),
            reason=_field(data, "reason", str),
            poll_after_s=300 if poll is None else max(1, poll),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "target_version": self.target_version,
            "reason": self.reason,
            "poll_after_s": self.poll_after_s,
        }


@dataclass(frozen=True)
class FleetLockRequest:
    """FleetLock body: {"client_params": {"id": node, "group": group}}."""

    node_id: str
    group: str

    @classmethod
    def from_json(cls, data: Any) -> FleetLockRequest:
        params = _object(_field(_object(data, {"client_params"}), "client_params", dict),
                         {"id", "group"}, "client_params")
        return cls(node_id=_name(params, "id"), group=_name(params, "group"))

    def to_json(self) -> dict[str, Any]:
        return {"client_params": {"id": self.node_id, "group": self.group}}


@dataclass(frozen=True)
class FleetLockError:
    """FleetLock error body; ``kind`` is low-cardinality, ``value`` is for humans."""

    kind: str
    value: str

    @classmethod
    def from_json(cls, data: Any) -> FleetLockError:
        data = _object(data, {"kind", "value"})
        return cls(kind=_field(data, "kind", str), value=_field(data, "value", str))

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": self.value}


def _matching(data: dict[str, Any], name: str, rule: re.Pattern[str], pattern: str) -> str:
    value = _field(data, name, str)
    if not rule.fullmatch(value):
        raise WireError(f"field '{name}' must match {pattern}")
    return value


@dataclass(frozen=True)
class SwarmTokens:
    """A group's swarm join tokens, posted by its first manager (``node_id``) and handed
    to the group's other hosts, each over its own host credential."""

    node_id: str
    group: str
    manager_addr: str
    manager_token: str
    worker_token: str

    @classmethod
    def from_json(cls, data: Any) -> SwarmTokens:
        data = _object(data, {"node_id", "group", "manager_addr", "manager_token", "worker_token"})
        return cls(
            node_id=_name(data, "node_id"),
            group=_name(data, "group"),
            manager_addr=_matching(data, "manager_addr", _ADDR, ADDR_PATTERN),
            manager_token=_matching(data, "manager_token", _JOIN_TOKEN, JOIN_TOKEN_PATTERN),
            worker_token=_matching(data, "worker_token", _JOIN_TOKEN, JOIN_TOKEN_PATTERN),
        )

    def to_json(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "group": self.group, "manager_addr": self.manager_addr,
                "manager_token": self.manager_token, "worker_token": self.worker_token}


@dataclass(frozen=True)
class SwarmJoin(Enrolment):
    """A host asking for its group's join tokens (an enrolment's shape: its node id and group)."""


class ReportEvent(enum.StrEnum):
    DOWNLOADING = "downloading"
    STAGED = "staged"
    REBOOTING = "rebooting"
    BLESSED = "blessed"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


class RollbackCause(enum.StrEnum):
    """Why systemd-boot fell back from a new version (on ``rolled_back`` reports, and on
    the ``rebooting`` report of a try again after an unexplained fallback)."""

    HEALTH_CHECK = "health-check"  # a berth-check-* unit failed on a boot of it
    KERNEL_PANIC = "kernel-panic"  # pstore kept a panic's record from a boot of it
    UNEXPLAINED = "unexplained"  # neither: power loss, a hang, the firmware


TRANSFER_PATHS = ("full", "delta")
MAX_BYTES = 2**63 - 1


@dataclass(frozen=True)
class Transfer:
    """What one update cost on the wire: by full download or by delta (any slot artifact
    assembled from the booted slot), the bytes fetched and what the full download weighs."""

    path: str
    bytes_fetched: int
    bytes_full: int

    @classmethod
    def from_json(cls, data: Any) -> Transfer:
        data = _object(data, {"path", "bytes_fetched", "bytes_full"}, "field 'transfer'")
        path = _field(data, "path", str)
        if path not in TRANSFER_PATHS:
            raise WireError(f"field 'transfer.path' must be one of {', '.join(TRANSFER_PATHS)}")
        counts = [_field(data, name, int) for name in ("bytes_fetched", "bytes_full")]
        if not all(0 <= count <= MAX_BYTES for count in counts):
            raise WireError(f"transfer byte counts must be 0 to {MAX_BYTES}")
        return cls(path, counts[0], counts[1])

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "bytes_fetched": self.bytes_fetched, "bytes_full": self.bytes_full}


@dataclass(frozen=True)
class Report:
    """What an agent tells the server about one step of one update.

    ``seq`` grows by one with every report a node sends (kept across reboots on
    /var), so the server can drop replays and out-of-order reports.
    """

    node_id: str
    group: str
    seq: int
    event: ReportEvent
    version: str
    from_version: str
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    cause: RollbackCause | None = None
    # On the staged report: how the new slot came (optional: older agents send none).
    transfer: Transfer | None = None

    @classmethod
    def from_json(cls, data: Any) -> Report:
        data = _object(
            data,
            {"node_id", "group", "seq", "event", "version", "from_version", "detail", "extra", "cause",
             "transfer"},
        )
        seq = _field(data, "seq", int)
        if not 0 <= seq <= MAX_SEQ:
            raise WireError(f"field 'seq' must be 0 to {MAX_SEQ}")
        event_text = _field(data, "event", str)
        try:
            event = ReportEvent(event_text)
        except ValueError:
            allowed = ", ".join(e.value for e in ReportEvent)
            raise WireError(f"field 'event' must be one of {allowed}") from None
        detail = _field(data, "detail", str, required=False) or ""
        cause_text = _field(data, "cause", str, required=False)
        try:
            cause = None if cause_text is None else RollbackCause(cause_text)
        except ValueError:
            allowed = ", ".join(c.value for c in RollbackCause)
            raise WireError(f"field 'cause' must be one of {allowed}") from None
        return cls(
            node_id=_name(data, "node_id"),
            group=_name(data, "group"),
            seq=seq,
            event=event,
            version=_version(data, "version") or "",
            from_version=_version(data, "from_version") or "",
            detail=detail[:2000],
            extra=_field(data, "extra", dict, required=False) or {},
            cause=cause,
            transfer=None if data.get("transfer") is None else Transfer.from_json(data["transfer"]),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "group": self.group,
            "seq": self.seq,
            "event": self.event.value,
            "version": self.version,
            "from_version": self.from_version,
            "detail": self.detail,
            "extra": self.extra,
            **({"cause": self.cause.value} if self.cause else {}),
            **({"transfer": self.transfer.to_json()} if self.transfer else {}),
        }
