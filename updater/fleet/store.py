"""Fleet state in SQLite (default) or PostgreSQL: hosts, counted updates, locks, rollouts, reports.

Every change to a group's reboot locks is also appended to ``lock_events``
(granted, renewed, released, expired) in the same transaction, so the log and
the semaphore never disagree; each change also trims the group's events older
than its ``lock_log_retention``.

Every invariant that must hold across server processes (the lock semaphore,
the rate limit, report ordering, the automatic halt) is decided inside one
database transaction: SQLite's ``BEGIN IMMEDIATE`` takes the single writer
lock; on PostgreSQL the transaction first locks the group's row
(``SELECT … FOR UPDATE``), so two processes deciding for one group queue up.
The decisions themselves are the pure functions of policy/locks/hoststate.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from updater.fleet import locks as lockmath
from updater.fleet.hoststate import (
    FAILURES,
    FINISHING,
    UNEXPLAINED_ROLLBACK,
    HostState,
    ReportRejected,
    after_offer,
    after_report,
)
from updater.fleet.policy import (
    ReleaseState,
    admin_transition,
    rate_allows,
    rollout_finished,
    should_halt,
    wave_share,
)
from updater.fleet.settings import GroupPolicy
from updater.wire import Report, ReportEvent, RollbackCause

_SCHEMA = """
CREATE TABLE IF NOT EXISTS groups (name TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS hosts (
  node_id TEXT PRIMARY KEY, grp TEXT NOT NULL, version TEXT NOT NULL, state TEXT NOT NULL,
  target TEXT, last_seq BIGINT NOT NULL, last_seen {real} NOT NULL);
CREATE INDEX IF NOT EXISTS hosts_grp ON hosts (grp, state);
CREATE TABLE IF NOT EXISTS updates (
  id {serial}, node_id TEXT NOT NULL, grp TEXT NOT NULL, version TEXT NOT NULL,
  started_at {real} NOT NULL, finished_at {real}, outcome TEXT);
CREATE INDEX IF NOT EXISTS updates_started ON updates (grp, started_at);
CREATE INDEX IF NOT EXISTS updates_release ON updates (grp, version);
CREATE INDEX IF NOT EXISTS updates_node ON updates (node_id, version);
CREATE TABLE IF NOT EXISTS locks (
  grp TEXT NOT NULL, node_id TEXT NOT NULL, acquired_at {real} NOT NULL,
  expires_at {real} NOT NULL, PRIMARY KEY (grp, node_id));
CREATE TABLE IF NOT EXISTS lock_events (
  id {serial}, grp TEXT NOT NULL, node_id TEXT NOT NULL, event TEXT NOT NULL, at {real} NOT NULL);
CREATE INDEX IF NOT EXISTS lock_events_grp ON lock_events (grp, at);
CREATE TABLE IF NOT EXISTS rollouts (
  grp TEXT NOT NULL, version TEXT NOT NULL, started_at {real} NOT NULL, finished_at {real},
  halted_reason TEXT, PRIMARY KEY (grp, version));
CREATE TABLE IF NOT EXISTS releases (
  image_id TEXT NOT NULL, version TEXT NOT NULL, state TEXT NOT NULL, changed_at {real} NOT NULL,
  PRIMARY KEY (image_id, version));
CREATE TABLE IF NOT EXISTS reports (
  node_id TEXT NOT NULL, seq BIGINT NOT NULL, at {real} NOT NULL, grp TEXT NOT NULL,
  event TEXT NOT NULL, version TEXT NOT NULL, from_version TEXT NOT NULL, detail TEXT NOT NULL,
  PRIMARY KEY (node_id, seq));
CREATE INDEX IF NOT EXISTS reports_version ON reports (version, at);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS identities (
  node_id TEXT PRIMARY KEY, grp TEXT NOT NULL, credential_sha256 TEXT NOT NULL,
  enrolled_at {real} NOT NULL);
CREATE TABLE IF NOT EXISTS host_events (
  id {serial}, node_id TEXT NOT NULL, at {real} NOT NULL, event TEXT NOT NULL,
  detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS host_events_node ON host_events (node_id, at);
CREATE TABLE IF NOT EXISTS transfers (
  node_id TEXT NOT NULL, seq BIGINT NOT NULL, version TEXT NOT NULL, path TEXT NOT NULL,
  bytes_fetched BIGINT NOT NULL, bytes_full BIGINT NOT NULL, PRIMARY KEY (node_id, seq));
"""
# Schemas 2 and 3 only add tables (identities, host_events; transfers), so an older
# database migrates by the CREATE … IF NOT EXISTS above; the number says which is there.
SCHEMA_VERSION = 3


# Commits outside Store._write (a host's last-seen bookkeeping) need not wait for
# the WAL flush; every transaction that counts (locks, starts, reports) does.
_PG_OPTIONS = "-c synchronous_commit=off"


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


class EnrolRefused(Exception):
    """The node id is taken (enrolled, or known in another group); nothing changed."""


@dataclass(frozen=True)
class RolloutRow:
    started_at: float
    finished_at: float | None
    halted_reason: str | None


def _from(since: float | None) -> float:
    return float("-inf") if since is None else since


def is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


class Store:
    """One connection per process; safe to share the database with other processes."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.postgres = is_postgres(url)
        if self.postgres:
            import psycopg

            self._pg = psycopg.connect(url, autocommit=True, options=_PG_OPTIONS)
            ddl = _SCHEMA.format(real="DOUBLE PRECISION", serial="BIGSERIAL PRIMARY KEY")
            with self._pg.transaction():
                # Two processes creating the schema at once would race on the catalog.
                self._pg.execute("SELECT pg_advisory_xact_lock(4242)")
                for statement in filter(str.strip, ddl.split(";")):
                    self._pg.execute(statement)
                self._set_schema_version()
        else:
            path = url.removeprefix("sqlite:///") if url.startswith("sqlite:") else url
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._lite = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._lite.execute("PRAGMA busy_timeout = 30000")
            self._lite.execute("PRAGMA journal_mode = WAL")
            # WAL + NORMAL survives a killed process (commits are in the WAL file);
            # only an OS crash or power loss can drop the last transactions.
            self._lite.execute("PRAGMA synchronous = NORMAL")
            ddl = _SCHEMA.format(real="REAL", serial="INTEGER PRIMARY KEY AUTOINCREMENT")
            with self._write():
                for statement in filter(str.strip, ddl.split(";")):
                    self._lite.execute(statement)
                self._set_schema_version()

    def _set_schema_version(self) -> None:
        self._rows(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(SCHEMA_VERSION),),
        )

    def close(self) -> None:
        (self._pg if self.postgres else self._lite).close()

    # --- plumbing ---

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.postgres:
            cursor = self._live_pg().execute(sql.replace("?", "%s"), params)
            return cursor.fetchall() if cursor.description else []
        return self._lite.execute(sql, params).fetchall()

    def _one(self, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        rows = self._rows(sql, params)
        return rows[0] if rows else None

    def _count(self, sql: str, params: tuple[Any, ...]) -> int:
        row = self._one(sql, params)
        return int(row[0]) if row else 0

    def _dicts(
        self, keys: tuple[str, ...], sql: str, params: tuple[Any, ...]
    ) -> list[dict[str, Any]]:
        return [dict(zip(keys, row, strict=True)) for row in self._rows(sql, params)]

    def _live_pg(self) -> Any:
        """The connection, re-opened if PostgreSQL dropped it (a restart fails one request, not all)."""
        if self._pg.broken or self._pg.closed:
            import psycopg

            self._pg = psycopg.connect(self.url, autocommit=True, options=_PG_OPTIONS)
        return self._pg

    @contextmanager
    def _write(self, *groups: str) -> Iterator[None]:
        """A transaction that no other writer for ``groups`` (on SQLite: any writer) interleaves."""
        if self.postgres:
            with self._live_pg().transaction():
                self._pg.execute("SET LOCAL synchronous_commit TO on")
                for group in sorted(set(groups)):  # one order everywhere: no deadlock
                    lock = "SELECT name FROM groups WHERE name = %s FOR UPDATE"
                    if self._pg.execute(lock, (group,)).fetchone() is None:
                        self._pg.execute(
                            "INSERT INTO groups VALUES (%s) ON CONFLICT DO NOTHING", (group,)
                        )
                        self._pg.execute(lock, (group,))
                yield
            return
        self._lite.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._lite.execute("ROLLBACK")
            raise
        self._lite.execute("COMMIT")

    # --- host identity ---

    def identity(self, node_id: str) -> Identity | None:
        row = self._one(
            "SELECT node_id, grp, credential_sha256 FROM identities WHERE node_id = ?", (node_id,)
        )
        return None if row is None else Identity(*row)

    def enrol(self, node_id: str, group: str, credential_sha256: str, now: float) -> None:
        """Bind ``node_id`` to ``group`` and a credential; EnrolRefused if it is taken."""
        with self._write(group):
            if self.identity(node_id) is not None:
                raise EnrolRefused(
                    f"node {node_id!r} is already enrolled; an admin can let it enrol again"
                    f" (POST /admin/hosts/{node_id}/forget)"
                )
            known = self._one("SELECT grp FROM hosts WHERE node_id = ?", (node_id,))
            if known is not None and known[0] != group:
                # A host the server knew before identities existed keeps its group.
                raise EnrolRefused(
                    f"node {node_id!r} is in group {known[0]!r}; only an admin moves hosts"
                )
            self._rows(
                "INSERT INTO identities (node_id, grp, credential_sha256, enrolled_at)"
                " VALUES (?, ?, ?, ?)",
                (node_id, group, credential_sha256, now),
            )
            self._host_event(node_id, now, "enrolled", f"in group {group}")

    def move_host(self, node_id: str, group: str, now: float) -> str:
        """An admin moves an enrolled host to ``group``; returns the group it was in.
        A reboot lock it held in its old group is given back there: it would otherwise
        hold one of that group's reboot slots until the lease ran out."""
        identity = self.identity(node_id)
        if identity is None:
            raise EnrolRefused(f"node {node_id!r} is not enrolled")
        with self._write(identity.group, group):
            identity = self.identity(node_id)
            if identity is None:
                raise EnrolRefused(f"node {node_id!r} is not enrolled")
            old = identity.group
            self._rows("UPDATE identities SET grp = ? WHERE node_id = ?", (group, node_id))
            self._rows("UPDATE hosts SET grp = ? WHERE node_id = ?", (group, node_id))
            self._host_event(node_id, now, "moved", f"from group {old} to {group}")
            if old != group and self._one("SELECT 1 FROM locks WHERE grp = ? AND node_id = ?", (old, node_id)):
                self._rows("DELETE FROM locks WHERE grp = ? AND node_id = ?", (old, node_id))
                self._rows(
                    "INSERT INTO lock_events (grp, node_id, event, at) VALUES (?, ?, ?, ?)",
                    (old, node_id, lockmath.LockEventKind.RELEASED.value, now),
                )
                self._host_event(node_id, now, "lock_released", f"its reboot lock in group {old}, on the move")
            return old

    def forget_identity(self, node_id: str, now: float) -> Identity:
        """An admin drops a host's credential (lost or leaked): the next enrolment claims the id."""
        with self._write():
            identity = self.identity(node_id)
            if identity is None:
                raise EnrolRefused(f"node {node_id!r} is not enrolled")
            self._rows("DELETE FROM identities WHERE node_id = ?", (node_id,))
            self._host_event(node_id, now, "forgotten", f"credential dropped (group {identity.group})")
            return identity

    def _host_event(self, node_id: str, now: float, event: str, detail: str) -> None:
        self._rows(
            "INSERT INTO host_events (node_id, at, event, detail) VALUES (?, ?, ?, ?)",
            (node_id, now, event, detail),
        )

    def host_events(self, node_id: str) -> list[dict[str, Any]]:
        """Enrolments and admin actions on one host, in order."""
        return self._dicts(
            ("at", "event", "detail"),
            "SELECT at, event, detail FROM host_events WHERE node_id = ? ORDER BY id",
            (node_id,),
        )

    # --- hosts and decisions ---

    def host(self, node_id: str) -> HostRow | None:
        row = self._one(
            "SELECT node_id, grp, version, state, target, last_seq FROM hosts WHERE node_id = ?",
            (node_id,),
        )
        return (
            None
            if row is None
            else HostRow(row[0], row[1], row[2], HostState(row[3]), row[4], row[5])
        )

    def observe(self, node_id: str, group: str, version: str, now: float) -> None:
        """Record a host that asked, or its new group or version."""
        self._rows(
            "INSERT INTO hosts (node_id, grp, version, state, target, last_seq, last_seen)"
            " VALUES (?, ?, ?, 'idle', NULL, -1, ?) ON CONFLICT (node_id) DO UPDATE"
            " SET grp = excluded.grp, version = excluded.version, last_seen = excluded.last_seen",
            (node_id, group, version, now),
        )

    def decision_view(
        self, node_id: str, image_id: str, version: str, group: str, after: str | None
    ) -> tuple[HostRow | None, ReleaseState, RolloutRow | None, RolloutRow | None]:
        """In one query: the host, the release's state, its rollout here and in ``after``."""
        row = self._one(
            "SELECT h.node_id, h.grp, h.version, h.state, h.target, h.last_seq, r.state,"
            " o.started_at, o.finished_at, o.halted_reason, p.started_at, p.finished_at, p.halted_reason"
            " FROM (SELECT 1 AS one) AS one"
            " LEFT JOIN hosts h ON h.node_id = ?"
            " LEFT JOIN releases r ON r.image_id = ? AND r.version = ?"
            " LEFT JOIN rollouts o ON o.grp = ? AND o.version = ?"
            " LEFT JOIN rollouts p ON p.grp = ? AND p.version = ?",
            (node_id, image_id, version, group, version, after or "", version),
        )
        assert row is not None
        host = (
            None
            if row[0] is None
            else HostRow(row[0], row[1], row[2], HostState(row[3]), row[4], row[5])
        )
        state = ReleaseState.ACTIVE if row[6] is None else ReleaseState(row[6])
        rollout = None if row[7] is None else RolloutRow(row[7], row[8], row[9])
        prerequisite = None if row[10] is None else RolloutRow(row[10], row[11], row[12])
        return host, state, rollout, prerequisite

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

    def begin_rollout(self, group: str, version: str, now: float) -> RolloutRow:
        self._rows(
            "INSERT INTO rollouts (grp, version, started_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (group, version, now),
        )
        row = self.rollout(group, version)
        assert row is not None
        return row

    def start_update(
        self, policy: GroupPolicy, node_id: str, version: str, now: float, update_timeout_s: float
    ) -> bool:
        """Count one more update started in the group, if the rate limit has room."""
        with self._write(policy.name):
            row = self._one("SELECT state, target FROM hosts WHERE node_id = ?", (node_id,))
            if row is not None and row[1] == version:
                return True  # another request (or process) already started it
            started = self._count(
                "SELECT COUNT(*) FROM updates WHERE grp = ? AND started_at > ?",
                (policy.name, now - policy.rate.period_s),
            )
            in_flight = self._count(
                "SELECT COUNT(*) FROM updates WHERE grp = ? AND finished_at IS NULL"
                " AND started_at > ?",
                (policy.name, now - update_timeout_s),
            )
            if not rate_allows(started, in_flight, policy.rate):
                return False
            state = after_offer(HostState(row[0]) if row else HostState.IDLE)
            self._rows(
                "INSERT INTO updates (node_id, grp, version, started_at) VALUES (?, ?, ?, ?)",
                (node_id, policy.name, version, now),
            )
            self._rows(
                "UPDATE hosts SET state = ?, target = ? WHERE node_id = ?",
                (state.value, version, node_id),
            )
            return True

    # --- FleetLock ---

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
        with self._write(policy.name):
            now = clock()
            before = self._holders(policy.name)
            result = change(before, now)
            self._apply_locks(policy, before, result, now)
            return result

    def lock(
        self, policy: GroupPolicy, node_id: str, clock: Callable[[], float]
    ) -> lockmath.LockResult:
        return self._change_locks(
            policy,
            clock,
            lambda before, now: lockmath.acquire(
                before, node_id, policy.max_concurrent_reboots, policy.lock_ttl_s, now
            ),
        )

    def unlock(
        self, policy: GroupPolicy, node_id: str, clock: Callable[[], float]
    ) -> lockmath.LockResult:
        return self._change_locks(
            policy, clock, lambda before, now: lockmath.release(before, node_id, now)
        )

    def lock_log(self, group: str, since: float | None = None) -> list[dict[str, Any]]:
        """The group's lock events in the order they happened (from ``since`` on, if given)."""
        return self._dicts(
            ("at", "node_id", "event"),
            "SELECT at, node_id, event FROM lock_events WHERE grp = ? AND at >= ? ORDER BY id",
            (group, _from(since)),
        )

    # --- reports ---

    def record_report(self, report: Report, policy: GroupPolicy, now: float) -> HostState:
        """Apply one report atomically; raises ReportRejected (nothing changed) if it may not."""
        with self._write(policy.name):
            host = self.host(report.node_id)
            if host is None:
                host = HostRow(
                    report.node_id, report.group, report.from_version, HostState.IDLE, None, -1
                )
            if report.seq <= host.last_seq:
                raise ReportRejected(
                    f"report seq {report.seq} is not after the last one ({host.last_seq}):"
                    " replayed or out of order"
                )
            state = after_report(host.state, report.event)
            finished = report.event in FINISHING
            version = report.version if report.event is ReportEvent.BLESSED else report.from_version
            target = None if finished else report.version
            self._rows(
                "INSERT INTO reports (node_id, seq, at, grp, event, version, from_version, detail)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    report.node_id,
                    report.seq,
                    now,
                    policy.name,
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
                (report.node_id, policy.name, version, state.value, target, report.seq, now),
            )
            if finished:
                unexplained = report.event is ReportEvent.ROLLED_BACK and report.cause is RollbackCause.UNEXPLAINED
                self._rows(
                    "UPDATE updates SET finished_at = ?, outcome = ?"
                    " WHERE node_id = ? AND version = ? AND finished_at IS NULL",
                    (now, UNEXPLAINED_ROLLBACK if unexplained else report.event.value,
                     report.node_id, report.version),
                )
                self._judge_rollout(policy, report.version, now)
            return state

    def _judge_rollout(self, policy: GroupPolicy, version: str, now: float) -> None:
        started = self._count(
            "SELECT COUNT(*) FROM updates WHERE grp = ? AND version = ?", (policy.name, version)
        )
        failed = self._count(
            "SELECT COUNT(*) FROM updates WHERE grp = ? AND version = ? AND outcome IN (?, ?)",
            (policy.name, version, *sorted(s.value for s in FAILURES)),
        )
        unexplained = self._count(
            "SELECT COUNT(*) FROM updates WHERE grp = ? AND version = ? AND outcome = ?",
            (policy.name, version, UNEXPLAINED_ROLLBACK),
        )
        if should_halt(started, failed, policy.halt, unexplained):
            self._rows(
                "UPDATE rollouts SET halted_reason = ? WHERE grp = ? AND version = ?"
                " AND halted_reason IS NULL",
                (f"{failed} of {started} updates failed or rolled back"
                 + (f", {unexplained} rolled back for no cause seen" if unexplained else ""),
                 policy.name, version),
            )
            return
        in_group = self._count("SELECT COUNT(*) FROM hosts WHERE grp = ?", (policy.name,))
        on_release = self._count(
            "SELECT COUNT(*) FROM hosts WHERE grp = ? AND version = ?", (policy.name, version)
        )
        if rollout_finished(in_group, on_release, failed + unexplained):
            self._rows(
                "UPDATE rollouts SET finished_at = ? WHERE grp = ? AND version = ?"
                " AND finished_at IS NULL AND halted_reason IS NULL",
                (now, policy.name, version),
            )

    # --- operators ---

    def change_release(self, image_id: str, version: str, action: str, now: float) -> ReleaseState:
        with self._write():
            state = admin_transition(self.release_state(image_id, version), action)
            self._rows(
                "INSERT INTO releases (image_id, version, state, changed_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (image_id, version) DO UPDATE SET state = excluded.state,"
                " changed_at = excluded.changed_at",
                (image_id, version, state.value, now),
            )
            return state

    def status(self, policies: dict[str, GroupPolicy], now: float) -> dict[str, Any]:
        groups: dict[str, Any] = {}
        for name, policy in policies.items():
            states = self._rows(
                "SELECT state, COUNT(*) FROM hosts WHERE grp = ? GROUP BY state", (name,)
            )
            versions = self._rows(
                "SELECT version, COUNT(*) FROM hosts WHERE grp = ? GROUP BY version", (name,)
            )
            rollouts = self._rows(
                "SELECT version, started_at, finished_at, halted_reason FROM rollouts WHERE grp = ?",
                (name,),
            )
            groups[name] = {
                "hosts_by_state": {s: n for s, n in states},
                "hosts_by_version": {v: n for v, n in versions},
                "locks_held": sorted(h.node_id for h in lockmath.live(self._holders(name), now)),
                "max_concurrent_reboots": policy.max_concurrent_reboots,
                "rate_used": self._count(
                    "SELECT COUNT(*) FROM updates WHERE grp = ? AND started_at > ?",
                    (name, now - policy.rate.period_s),
                ),
                "rate_limit": policy.rate.max_updates,
                "rollouts": [
                    {
                        "version": v,
                        "started_at": s,
                        "finished_at": f,
                        "halted_reason": h,
                        "wave_percent": round(100 * wave_share(policy.waves, now - s), 2),
                    }
                    for v, s, f, h in rollouts
                ],
            }
        releases = self._rows("SELECT image_id, version, state FROM releases")
        return {
            "now": now,
            "groups": groups,
            "releases": [{"image_id": i, "version": v, "state": s} for i, v, s in releases],
        }

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
            (group, _from(since)),
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

    # --- the test clock's offset, shared by all processes on this database ---

    def clock_offset(self) -> float:
        row = self._one("SELECT value FROM meta WHERE key = 'clock_offset'")
        return float(row[0]) if row else 0.0

    def set_clock_offset(self, offset: float) -> None:
        self._rows(
            "INSERT INTO meta (key, value) VALUES ('clock_offset', ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (repr(offset),),
        )
