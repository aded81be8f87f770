"""What the admin API and the metrics read: status figures, histories, logs, counts;
and the test clock's offset, shared by all processes on one database."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from updater.fleet.db import Database, from_since
from updater.fleet.documents import ReleaseStatus
from updater.fleet.overview import GroupFigures, StatusView
from updater.fleet.policy import ReleaseState
from updater.fleet.records import RolloutRow
from updater.fleet.settings import GroupPolicy
from updater.fleet.store_locks import LockQueries


class AdminReads(LockQueries):
    def status_view(self, policies: Iterable[GroupPolicy], now: float) -> StatusView:
        """The figures ``overview.status_document`` renders, per group and per release."""
        groups = []
        for policy in policies:
            name = policy.name
            groups.append(
                GroupFigures(
                    policy=policy,
                    hosts_by_state=self._rows(
                        "SELECT state, COUNT(*) FROM hosts WHERE grp = ? GROUP BY state", (name,)
                    ),
                    hosts_by_version=self._rows(
                        "SELECT version, COUNT(*) FROM hosts WHERE grp = ? GROUP BY version",
                        (name,),
                    ),
                    locks_held=self.lock_holders(name, now),
                    rate_used=self._count(
                        "SELECT COUNT(*) FROM updates WHERE grp = ? AND started_at > ?",
                        (name, now - policy.rate.period_s),
                    ),
                    rollouts={
                        version: RolloutRow(*row)
                        for version, *row in self._rows(
                            "SELECT version, started_at, finished_at, halted_reason"
                            " FROM rollouts WHERE grp = ?",
                            (name,),
                        )
                    },
                )
            )
        releases = [
            ReleaseStatus(image_id, version, ReleaseState(state))
            for image_id, version, state in self._rows("SELECT image_id, version, state FROM releases")
        ]
        return StatusView(now, groups, releases)

    def history(self, node_id: str) -> list[dict[str, Any]]:
        return self._dicts(
            ("seq", "at", "group", "event", "version", "from_version", "detail"),
            "SELECT seq, at, grp, event, version, from_version, detail FROM reports"
            " WHERE node_id = ? ORDER BY seq",
            (node_id,),
        )

    def transfers(self, node_id: str) -> list[dict[str, Any]]:
        """What each of the node's updates cost on the wire, as its staged reports said."""
        return self._dicts(
            ("seq", "version", "path", "bytes_fetched", "bytes_full"),
            "SELECT seq, version, path, bytes_fetched, bytes_full FROM transfers"
            " WHERE node_id = ? ORDER BY seq",
            (node_id,),
        )

    def update_log(self, group: str, since: float | None = None) -> list[dict[str, Any]]:
        """The group's counted updates in the order they started (from ``since`` on, if given).

        These rows are what start_update counted for the rate limit; ``finished_at``
        and ``outcome`` stay None while an update is in flight.
        """
        return self._dicts(
            ("node_id", "version", "started_at", "finished_at", "outcome"),
            "SELECT node_id, version, started_at, finished_at, outcome FROM updates"
            " WHERE grp = ? AND started_at >= ? ORDER BY started_at, id",
            (group, from_since(since)),
        )

    def timeline(self, version: str) -> list[dict[str, Any]]:
        rows = self._rows(
            "SELECT at, grp, event FROM reports WHERE version = ? ORDER BY at", (version,)
        )
        return [{"at": at, "group": grp, "event": event} for at, grp, event in rows]

    def counts(self) -> dict[str, list[tuple[Any, ...]]]:
        """Raw figures the metrics endpoint renders."""
        return {
            "hosts": self._rows("SELECT grp, state, COUNT(*) FROM hosts GROUP BY grp, state"),
            "updates": self._rows(
                "SELECT grp, COALESCE(outcome, 'in_flight'), COUNT(*) FROM updates"
                " GROUP BY grp, COALESCE(outcome, 'in_flight')"
            ),
            "locks": self._rows("SELECT grp, expires_at FROM locks"),
            "halted": self._rows(
                "SELECT grp, version FROM rollouts WHERE halted_reason IS NOT NULL"
            ),
        }


class ClockOffset(Database):
    """The offset `POST /admin/clock` moves time by (simulator and tests only)."""

    def clock_offset(self) -> float:
        row = self._one("SELECT value FROM meta WHERE key = 'clock_offset'")
        return float(row[0]) if row else 0.0

    def set_clock_offset(self, offset: float) -> None:
        self._rows(
            "INSERT INTO meta (key, value) VALUES ('clock_offset', ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (repr(offset),),
        )
