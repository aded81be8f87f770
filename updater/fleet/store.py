"""Fleet state in SQLite (default) or PostgreSQL: hosts, counted updates, locks, rollouts, reports.

``Store`` is the one object the server holds: the connection and schema
(``db``), with the queries grouped by idea in the ``store_*`` modules. The
decisions are the pure functions of decision/reports/locks/policy/hoststate:
the store reads the views they judge and applies the effects they return.
"""

from __future__ import annotations

from updater.fleet.store_identities import IdentityQueries
from updater.fleet.store_reads import AdminReads, ClockOffset
from updater.fleet.store_swarm import SwarmQueries
from updater.fleet.store_updates import UpdateQueries


class Store(IdentityQueries, UpdateQueries, AdminReads, ClockOffset, SwarmQueries):
    """One connection per process; safe to share the database with other processes."""
