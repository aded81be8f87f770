"""Reading the views the pure deciders judge, and applying their effects.

A check reads one ``CheckView`` (no lock: most checks only read) and applies
``decision.decide_update``'s effects in one transaction, which takes the
group's lock only when a rate-limit slot is asked for; a report reads its
``ReportView`` and applies ``reports.judge_report``'s effects in one transaction
under the group's lock.
"""

from __future__ import annotations

from typing import Any

from updater.fleet.db import Database
from updater.fleet.decision import (
    BeginRollout,
    CheckView,
    Effect,
    Observe,
    ObserveRole,
    SlotOutcome,
    SlotView,
    TakeSlot,
    judge_slot,
)
from updater.fleet.hoststate import FAILURES, UNEXPLAINED_ROLLBACK, HostState, ReportRejected
from updater.fleet.policy import ReleaseState, admin_transition
from updater.fleet.records import HostRow, RolloutRow
from updater.fleet.reports import (
    FinishRollout,
    Halt,
    ReportEffects,
    ReportView,
    RolloutCounts,
    judge_report,
)
from updater.fleet.settings import GroupPolicy
from updater.wire import Report


class UpdateQueries(Database):
    # --- checks ---

    def host(self, node_id: str) -> HostRow | None:
        row = self._one(
            "SELECT node_id, grp, version, state, target, last_seq FROM hosts WHERE node_id = ?",
            (node_id,),
        )
        return None if row is None else _host(row)

    def check_view_of_host(self, node_id: str) -> CheckView:
        """The view of a check no release is offered to: the host alone."""
        return CheckView(self.host(node_id), swarm=self.swarm_role(node_id))

    def swarm_role(self, node_id: str) -> tuple[str, str] | None:
        row = self._one("SELECT grp, role FROM swarm_roles WHERE node_id = ?", (node_id,))
        return None if row is None else (row[0], row[1])

    def check_view(
        self, node_id: str, image_id: str, version: str, group: str, after: str | None
    ) -> CheckView:
        """In one query: the host, the release's state, its rollout here and in ``after``."""
        row = self._one(
            "SELECT h.node_id, h.grp, h.version, h.state, h.target, h.last_seq, r.state,"
            " o.started_at, o.finished_at, o.halted_reason, p.started_at, p.finished_at, p.halted_reason,"
            " s.grp, s.role"
            " FROM (SELECT 1 AS one) AS one"
            " LEFT JOIN hosts h ON h.node_id = ?"
            " LEFT JOIN swarm_roles s ON s.node_id = h.node_id"
            " LEFT JOIN releases r ON r.image_id = ? AND r.version = ?"
            " LEFT JOIN rollouts o ON o.grp = ? AND o.version = ?"
            " LEFT JOIN rollouts p ON p.grp = ? AND p.version = ?",
            (node_id, image_id, version, group, version, after or "", version),
        )
        assert row is not None  # the one-row FROM always gives a row
        return CheckView(
            host=None if row[0] is None else _host(row[:6]),
            release_state=ReleaseState.ACTIVE if row[6] is None else ReleaseState(row[6]),
            rollout=None if row[7] is None else RolloutRow(row[7], row[8], row[9]),
            prerequisite=None if row[10] is None else RolloutRow(row[10], row[11], row[12]),
            swarm=None if row[13] is None else (row[13], row[14]),
        )

    def apply_check(
        self,
        effects: tuple[Effect, ...],
        policy: GroupPolicy,
        now: float,
        update_timeout_s: float,
    ) -> SlotOutcome | None:
        """Apply a decision's effects in one transaction; how its slot went, if it asked for one."""
        if not effects:
            return None
        slot = any(isinstance(e, TakeSlot) for e in effects)
        outcome = None
        # Bookkeeping alone needs no group lock and no flush; a slot needs both.
        with self.write(*((policy.name,) if slot else ()), durable=slot):
            # Rows are locked in one order by every transaction (group, rollout, host),
            # so two checks of one host on PostgreSQL cannot deadlock each other.
            for effect in sorted(effects, key=_lock_rank):
                if isinstance(effect, Observe):
                    self._observe(effect, now)
                elif isinstance(effect, ObserveRole):
                    self._observe_role(effect)
                elif isinstance(effect, BeginRollout):
                    self._rows(
                        "INSERT INTO rollouts (grp, version, started_at) VALUES (?, ?, ?)"
                        " ON CONFLICT DO NOTHING",
                        (effect.group, effect.version, now),
                    )
                else:
                    outcome = self._take_slot(effect, policy, now, update_timeout_s)
        return outcome

    def observe(self, node_id: str, group: str, version: str, now: float) -> None:
        """Record a host that asked, or its new group or version."""
        self._observe(Observe(node_id, group, version), now)

    def _observe(self, effect: Observe, now: float) -> None:
        self._rows(
            "INSERT INTO hosts (node_id, grp, version, state, target, last_seq, last_seen)"
            " VALUES (?, ?, ?, 'idle', NULL, -1, ?) ON CONFLICT (node_id) DO UPDATE"
            " SET grp = excluded.grp, version = excluded.version, last_seen = excluded.last_seen",
            (effect.node_id, effect.group, effect.version, now),
        )

    def _observe_role(self, effect: ObserveRole) -> None:
        if effect.role is None:
            self._rows("DELETE FROM swarm_roles WHERE node_id = ?", (effect.node_id,))
            return
        self._rows(
            "INSERT INTO swarm_roles (node_id, grp, role) VALUES (?, ?, ?) ON CONFLICT (node_id)"
            " DO UPDATE SET grp = excluded.grp, role = excluded.role",
            (effect.node_id, effect.group, effect.role),
        )

    def start_update(
        self, policy: GroupPolicy, node_id: str, version: str, now: float, update_timeout_s: float
    ) -> bool:
        """Count one more update started in the group, if the rate limit has room.
        Raises ReportRejected if the host is midway through another update."""
        effect = TakeSlot(policy.name, node_id, version)
        outcome = self.apply_check((effect,), policy, now, update_timeout_s)
        if outcome is SlotOutcome.BUSY:
            raise ReportRejected(f"cannot offer {version} to {node_id!r}: it is midway through another update")
        return outcome is not SlotOutcome.RATE_LIMITED

    def _take_slot(
        self, slot: TakeSlot, policy: GroupPolicy, now: float, update_timeout_s: float
    ) -> SlotOutcome:
        row = self._one("SELECT state, target FROM hosts WHERE node_id = ?", (slot.node_id,))
        view = SlotView(
            state=None if row is None else HostState(row[0]),
            target=None if row is None else row[1],
            started_in_period=self._count(
                "SELECT COUNT(*) FROM updates WHERE grp = ? AND started_at > ?",
                (slot.group, now - policy.rate.period_s),
            ),
            in_flight=self._count(
                "SELECT COUNT(*) FROM updates WHERE grp = ? AND finished_at IS NULL"
                " AND started_at > ?",
                (slot.group, now - update_timeout_s),
            ),
        )
        outcome = judge_slot(view, slot.version, policy.rate)
        if outcome is SlotOutcome.STARTED:
            self._rows(
                "INSERT INTO updates (node_id, grp, version, started_at) VALUES (?, ?, ?, ?)",
                (slot.node_id, slot.group, slot.version, now),
            )
            self._rows(
                "UPDATE hosts SET state = ?, target = ? WHERE node_id = ?",
                (HostState.OFFERED.value, slot.version, slot.node_id),
            )
        return outcome

    # --- reports ---

    def record_report(self, report: Report, policy: GroupPolicy, now: float) -> HostState:
        """Apply one report atomically; raises ReportRejected (nothing changed) if it may not."""
        with self.write(policy.name):
            effects = judge_report(
                report, policy.name, policy.halt, self._report_view(report, policy.name)
            )
            self._apply_report(report, policy.name, effects, now)
            return effects.host.state

    def _report_view(self, report: Report, group: str) -> ReportView:
        version = report.version
        failed, unexplained, open_updates = (
            self._count(
                "SELECT COUNT(*) FROM updates WHERE grp = ? AND version = ?" + where, params
            )
            for where, params in (
                (" AND outcome IN (?, ?)", (group, version, *sorted(s.value for s in FAILURES))),
                (" AND outcome = ?", (group, version, UNEXPLAINED_ROLLBACK)),
                (" AND node_id = ? AND finished_at IS NULL", (group, version, report.node_id)),
            )
        )
        counts = RolloutCounts(
            started=self._count(
                "SELECT COUNT(*) FROM updates WHERE grp = ? AND version = ?", (group, version)
            ),
            failed=failed,
            unexplained=unexplained,
            hosts_in_group=self._count("SELECT COUNT(*) FROM hosts WHERE grp = ?", (group,)),
            hosts_on_release=self._count(
                "SELECT COUNT(*) FROM hosts WHERE grp = ? AND version = ?", (group, version)
            ),
        )
        return ReportView(self.host(report.node_id), counts, open_updates)

    def _apply_report(self, report: Report, group: str, effects: ReportEffects, now: float) -> None:
        host = effects.host
        self._rows(
            "INSERT INTO reports (node_id, seq, at, grp, event, version, from_version, detail)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                report.node_id,
                report.seq,
                now,
                group,
                report.event.value,
                report.version,
                report.from_version,
                report.detail,
            ),
        )
        if report.transfer is not None:
            self._rows(
                "INSERT INTO transfers (node_id, seq, version, path, bytes_fetched, bytes_full)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (report.node_id, report.seq, report.version, report.transfer.path,
                 report.transfer.bytes_fetched, report.transfer.bytes_full),
            )
        self._rows(
            "INSERT INTO hosts (node_id, grp, version, state, target, last_seq, last_seen)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (node_id) DO UPDATE SET grp = excluded.grp,"
            " version = excluded.version, state = excluded.state, target = excluded.target,"
            " last_seq = excluded.last_seq, last_seen = excluded.last_seen",
            (host.node_id, host.group, host.version, host.state.value, host.target, host.last_seq, now),
        )
        if effects.outcome is None:
            return
        self._rows(
            "UPDATE updates SET finished_at = ?, outcome = ?"
            " WHERE node_id = ? AND version = ? AND finished_at IS NULL",
            (now, effects.outcome, report.node_id, report.version),
        )
        if isinstance(effects.rollout, Halt):
            self._rows(
                "UPDATE rollouts SET halted_reason = ? WHERE grp = ? AND version = ?"
                " AND halted_reason IS NULL",
                (effects.rollout.reason, group, report.version),
            )
        elif isinstance(effects.rollout, FinishRollout):
            self._rows(
                "UPDATE rollouts SET finished_at = ? WHERE grp = ? AND version = ?"
                " AND finished_at IS NULL AND halted_reason IS NULL",
                (now, group, report.version),
            )

    # --- operators ---

    def release_state(self, image_id: str, version: str) -> ReleaseState:
        row = self._one(
            "SELECT state FROM releases WHERE image_id = ? AND version = ?", (image_id, version)
        )
        return ReleaseState.ACTIVE if row is None else ReleaseState(row[0])

    def rollout(self, group: str, version: str) -> RolloutRow | None:
        row = self._one(
            "SELECT started_at, finished_at, halted_reason FROM rollouts WHERE grp = ? AND version = ?",
            (group, version),
        )
        return None if row is None else RolloutRow(*row)

    def change_release(self, image_id: str, version: str, action: str, now: float) -> ReleaseState:
        with self.write():
            state = admin_transition(self.release_state(image_id, version), action)
            self._rows(
                "INSERT INTO releases (image_id, version, state, changed_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (image_id, version) DO UPDATE SET state = excluded.state,"
                " changed_at = excluded.changed_at",
                (image_id, version, state.value, now),
            )
            return state


def _lock_rank(effect: Effect) -> int:
    return (BeginRollout, Observe, ObserveRole, TakeSlot).index(type(effect))


def _host(row: tuple[Any, ...]) -> HostRow:
    return HostRow(row[0], row[1], row[2], HostState(row[3]), row[4], row[5])
