"""Who each node is (enrolment, moves, forgetting) and the log of what was done to it."""

from __future__ import annotations

from typing import Any

from updater.fleet.db import Database
from updater.fleet.locks import LockEventKind
from updater.fleet.records import Identity


class EnrolRefused(Exception):
    """The node id is taken (enrolled, or known in another group); nothing changed."""


class IdentityQueries(Database):
    def identity(self, node_id: str) -> Identity | None:
        row = self._one(
            "SELECT node_id, grp, credential_sha256 FROM identities WHERE node_id = ?", (node_id,)
        )
        return None if row is None else Identity(*row)

    def enrol(self, node_id: str, group: str, credential_sha256: str, now: float) -> None:
        """Bind ``node_id`` to ``group`` and a credential; EnrolRefused if it is taken."""
        with self.write(group):
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
        with self.write(identity.group, group):
            identity = self.identity(node_id)
            if identity is None:
                raise EnrolRefused(f"node {node_id!r} is not enrolled")
            old = identity.group
            self._rows("UPDATE identities SET grp = ? WHERE node_id = ?", (group, node_id))
            self._rows("UPDATE hosts SET grp = ? WHERE node_id = ?", (group, node_id))
            self._host_event(node_id, now, "moved", f"from group {old} to {group}")
            if old != group and self._one(
                "SELECT 1 FROM locks WHERE grp = ? AND node_id = ?", (old, node_id)
            ):
                self._rows("DELETE FROM locks WHERE grp = ? AND node_id = ?", (old, node_id))
                self._rows(
                    "INSERT INTO lock_events (grp, node_id, event, at) VALUES (?, ?, ?, ?)",
                    (old, node_id, LockEventKind.RELEASED.value, now),
                )
                self._host_event(
                    node_id, now, "lock_released", f"its reboot lock in group {old}, on the move"
                )
            return old

    def forget_identity(self, node_id: str, now: float) -> Identity:
        """An admin drops a host's credential (lost or leaked): the next enrolment claims the id."""
        with self.write():
            identity = self.identity(node_id)
            if identity is None:
                raise EnrolRefused(f"node {node_id!r} is not enrolled")
            self._rows("DELETE FROM identities WHERE node_id = ?", (node_id,))
            # Whoever enrols as it next must not inherit the swarm join tokens it posted.
            self._rows("DELETE FROM swarm_tokens WHERE node_id = ?", (node_id,))
            self._host_event(
                node_id, now, "forgotten", f"credential dropped (group {identity.group})"
            )
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
