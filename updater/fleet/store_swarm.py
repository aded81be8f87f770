"""A group's swarm join tokens: kept for the hosts of the group, never in an admin document.

The first host of a group to post them holds them; it may post them again (rotated
tokens), any other host is refused, so one swarm per group. Only an enrolled host
reaches these queries (the server checks its credential and group first).
"""

from __future__ import annotations

from updater.fleet.db import Database
from updater.wire import SwarmTokens


class SwarmQueries(Database):
    def put_swarm_tokens(self, tokens: SwarmTokens, now: float) -> str | None:
        """Keep ``tokens`` for their group; None, or the node that holds the group's tokens."""
        with self.write(tokens.group):
            row = self._one("SELECT node_id FROM swarm_tokens WHERE grp = ?", (tokens.group,))
            if row is not None and row[0] != tokens.node_id:
                return str(row[0])
            self._rows(
                "INSERT INTO swarm_tokens (grp, node_id, manager_addr, manager_token, worker_token, at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (grp) DO UPDATE SET"
                " manager_addr = excluded.manager_addr, manager_token = excluded.manager_token,"
                " worker_token = excluded.worker_token, at = excluded.at",
                (tokens.group, tokens.node_id, tokens.manager_addr, tokens.manager_token,
                 tokens.worker_token, now),
            )
            return None

    def swarm_tokens(self, group: str) -> SwarmTokens | None:
        row = self._one(
            "SELECT node_id, grp, manager_addr, manager_token, worker_token FROM swarm_tokens"
            " WHERE grp = ?",
            (group,),
        )
        return None if row is None else SwarmTokens(*row)
