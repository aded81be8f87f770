"""Rows the store reads, as frozen values: what the pure deciders are handed."""

from __future__ import annotations

from dataclasses import dataclass

from updater.fleet.hoststate import HostState


@dataclass(frozen=True)
class HostRow:
    node_id: str
    group: str
    version: str
    state: HostState
    target: str | None
    last_seq: int


@dataclass(frozen=True)
class Identity:
    """Who a node id is: the group it was enrolled in and its credential's hash."""

    node_id: str
    group: str
    credential_sha256: str


@dataclass(frozen=True)
class RolloutRow:
    started_at: float
    finished_at: float | None
    halted_reason: str | None
