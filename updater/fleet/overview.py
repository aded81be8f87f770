"""The status document of `GET /admin/status` (documents.Status), as a pure function of what the store read.

The wave a rollout has reached is judged here (from the group's waves and the
time since it began), not in the store.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from updater.fleet.documents import CatalogEntry, GroupStatus, ReleaseStatus, RolloutStatus, Status
from updater.fleet.policy import wave_share
from updater.fleet.records import RolloutRow
from updater.fleet.settings import GroupPolicy
from updater.release import Release


@dataclass(frozen=True)
class GroupFigures:
    policy: GroupPolicy
    hosts_by_state: list[tuple[str, int]]
    hosts_by_version: list[tuple[str, int]]
    locks_held: list[str]  # sorted
    rate_used: int  # updates started in the rate limit's period
    rollouts: dict[str, RolloutRow]  # by version, in the order the store keeps them


@dataclass(frozen=True)
class StatusView:
    now: float
    groups: list[GroupFigures]
    releases: list[ReleaseStatus]


def wave_percent(rollout: RolloutRow, policy: GroupPolicy, now: float) -> float:
    """The share of the group the rollout's wave has reached, in percent."""
    return round(100 * wave_share(policy.waves, now - rollout.started_at), 2)


def status_document(view: StatusView, catalog: Iterable[Release]) -> Status:
    return Status(
        now=view.now,
        groups={
            g.policy.name: GroupStatus(
                hosts_by_state=dict(g.hosts_by_state),
                hosts_by_version=dict(g.hosts_by_version),
                locks_held=g.locks_held,
                max_concurrent_reboots=g.policy.max_concurrent_reboots,
                rate_used=g.rate_used,
                rate_limit=g.policy.rate.max_updates,
                rollouts=[
                    RolloutStatus(
                        version, r.started_at, r.finished_at, r.halted_reason,
                        wave_percent(r, g.policy, view.now),
                    )
                    for version, r in g.rollouts.items()
                ],
            )
            for g in view.groups
        },
        releases=view.releases,
        catalog=[CatalogEntry(r.image_id, r.version, r.withdrawn) for r in catalog],
    )
