"""FleetLock's reboot semaphore per group, and its log.

Every change to a group's reboot locks is also appended to ``lock_events``
(granted, renewed, released, expired) in the same transaction, so the log and
the semaphore never disagree; each change also trims the group's events older
than its ``lock_log_retention``. The semaphore's rules are updater.fleet.locks'.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from updater.fleet import locks as lockmath
from updater.fleet.db import Database, from_since
from updater.fleet.settings import GroupPolicy


class LockQueries(Database):
    def _holders(self, group: str) -> list[lockmath.Holder]:
        rows = self._rows(
            "SELECT node_id, acquired_at, expires_at FROM locks WHERE grp = ?", (group,)
        )
        return [lockmath.Holder(*row) for row in rows]

    def _apply_locks(
        self,
        policy: GroupPolicy,
        before: list[lockmath.Holder],
        result: lockmath.LockResult,
        now: float,
    ) -> None:
        group = policy.name
        after = {h.node_id: h for h in result.holders}
        for holder in before:
            if holder.node_id not in after:
                self._rows(
                    "DELETE FROM locks WHERE grp = ? AND node_id = ?", (group, holder.node_id)
                )
        for holder in result.holders:
            if holder not in before:
                self._rows(
                    "INSERT INTO locks (grp, node_id, acquired_at, expires_at) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (grp, node_id) DO UPDATE SET expires_at = excluded.expires_at",
                    (group, holder.node_id, holder.acquired_at, holder.expires_at),
                )
        events = lockmath.lock_events(before, result, now)
        for event in events:
            self._rows(
                "INSERT INTO lock_events (grp, node_id, event, at) VALUES (?, ?, ?, ?)",
                (group, event.node_id, event.kind.value, now),
            )
        if events:
            self._rows(
                "DELETE FROM lock_events WHERE grp = ? AND at < ?",
                (group, now - policy.lock_log_retention_s),
            )

    # The time is read once the group's transaction holds its lock, so that leases
    # are judged, and events logged, in the order the transactions commit.

    def _change_locks(
        self,
        policy: GroupPolicy,
        clock: Callable[[], float],
        change: Callable[[list[lockmath.Holder], float], lockmath.LockResult],
    ) -> lockmath.LockResult:
        with self.write(policy.name):
            now = clock()
            before = self._holders(policy.name)
            result = change(before, now)
            self._apply_locks(policy, before, result, now)
            return result

    def swarm_managers(self, group: str) -> frozenset[str]:
        """The group's hosts whose last check said they are swarm managers."""
        rows = self._rows("SELECT node_id FROM swarm_roles WHERE grp = ? AND role = 'manager'", (group,))
        return frozenset(row[0] for row in rows)

    def lock(
        self, policy: GroupPolicy, node_id: str, clock: Callable[[], float]
    ) -> lockmath.LockResult:
        return self._change_locks(
            policy,
            clock,
            lambda before, now: lockmath.acquire(
                before, node_id, policy.max_concurrent_reboots, policy.lock_ttl_s, now,
                self.swarm_managers(policy.name),
            ),
        )

    def unlock(
        self, policy: GroupPolicy, node_id: str, clock: Callable[[], float]
    ) -> lockmath.LockResult:
        return self._change_locks(
            policy, clock, lambda before, now: lockmath.release(before, node_id, now)
        )

    def lock_holders(self, group: str, now: float) -> list[str]:
        """The nodes holding a live lease in ``group``, sorted."""
        return sorted(h.node_id for h in lockmath.live(self._holders(group), now))

    def lock_log(self, group: str, since: float | None = None) -> list[dict[str, Any]]:
        """The group's lock events in the order they happened (from ``since`` on, if given)."""
        return self._dicts(
            ("at", "node_id", "event"),
            "SELECT at, node_id, event FROM lock_events WHERE grp = ? AND at >= ? ORDER BY id",
            (group, from_since(since)),
        )
