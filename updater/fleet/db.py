"""The fleet database: its schema and migrations, and one connection (SQLite or PostgreSQL).

Every invariant that must hold across server processes (the lock semaphore,
the rate limit, report ordering, the automatic halt) is decided inside one
``Database.write`` transaction: SQLite's ``BEGIN IMMEDIATE`` takes the single
writer lock; on PostgreSQL the transaction first locks the group's row
(``SELECT … FOR UPDATE``), so two processes deciding for one group queue up.
Queries use ``?`` placeholders; on PostgreSQL they become ``%s``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
CREATE TABLE IF NOT EXISTS swarm_roles (
  node_id TEXT PRIMARY KEY, grp TEXT NOT NULL, role TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS swarm_roles_grp ON swarm_roles (grp, role);
CREATE TABLE IF NOT EXISTS swarm_tokens (
  grp TEXT PRIMARY KEY, node_id TEXT NOT NULL, manager_addr TEXT NOT NULL,
  manager_token TEXT NOT NULL, worker_token TEXT NOT NULL, at {real} NOT NULL);
"""
# Schemas 2 to 5 only add tables (identities, host_events; transfers; swarm_roles;
# swarm_tokens), so an older database migrates by the CREATE … IF NOT EXISTS above; the
# number says which is there.
SCHEMA_VERSION = 5


# Commits outside Database.write (a host's last-seen bookkeeping) need not wait for
# the WAL flush; every transaction that counts (locks, starts, reports) does.
_PG_OPTIONS = "-c synchronous_commit=off"


def is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


class Database:
    """One connection per process; safe to share the database with other processes.

    Opening it creates the schema, or migrates an older one, in one transaction."""

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
            with self.write():
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
    def write(self, *groups: str, durable: bool = True) -> Iterator[None]:
        """A transaction that no other writer for ``groups`` (on SQLite: any writer) interleaves.

        ``durable=False`` is for bookkeeping a lost commit costs nothing of (a host's
        last-seen version, a rollout's begin, both re-done by its next check): on
        PostgreSQL it does not wait for the WAL flush."""
        if self.postgres:
            with self._live_pg().transaction():
                if durable:
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


def from_since(since: float | None) -> float:
    """The lower bound of a log query: everything when no ``since`` is given."""
    return float("-inf") if since is None else since
