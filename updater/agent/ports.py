"""What the agent needs from a fleet, as one small interface, and its two forms.

``Standalone`` is a host with no fleet server: it takes the newest release,
locks are always free and reports go only to the journal. ``ServerFleet``
speaks to `berth serve` through updater.client.FleetClient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from updater.agent.journal import log
from updater.wire import Report

if TYPE_CHECKING:
    from updater.client import FleetClient


@dataclass(frozen=True)
class Offer:
    allowed: bool  # may the agent update now at all
    version: str | None  # the version to take; None with allowed: the newest it may take
    reason: str
    poll_after_s: int | None = None  # the server's pace, overriding the poll interval


class Fleet(Protocol):
    def offer(self, current: str, bad: tuple[str, ...], image_id: str) -> Offer: ...
    def report(self, report: Report) -> None: ...
    def take_reboot_lock(self) -> bool: ...
    def release_reboot_lock(self) -> bool: ...


class Standalone:
    def offer(self, current: str, bad: tuple[str, ...], image_id: str) -> Offer:
        return Offer(True, None, "standalone: newest signed release")

    def report(self, report: Report) -> None:
        """No server to tell: the agent's journal record of the event is the report."""

    def take_reboot_lock(self) -> bool:
        return True

    def release_reboot_lock(self) -> bool:
        return True


class ServerFleet:
    def __init__(self, server_url: str, node_id: str, group: str, token: str = "") -> None:
        self._params = (server_url, node_id, group, token or None)
        self._client: FleetClient | None = None

    @property
    def client(self) -> FleetClient:
        # Made on first use: the HTTP stack loads in the agent's step, not at its start.
        if self._client is None:
            from updater.client import FleetClient

            server_url, node_id, group, token = self._params
            self._client = FleetClient(server_url, node_id, group, token=token)
        return self._client

    def offer(self, current: str, bad: tuple[str, ...], image_id: str) -> Offer:
        from updater.client import FleetError

        try:
            decision = self.client.check(current, bad_versions=bad, image_id=image_id)
        except FleetError as error:
            return Offer(False, None, f"fleet server: {error}")
        return Offer(
            decision.target_version is not None,
            decision.target_version,
            decision.reason,
            decision.poll_after_s,
        )

    def report(self, report: Report) -> None:
        from updater.client import FleetError

        try:
            self.client.report(report)
        except FleetError as error:
            log("warning", f"report {report.event.value} not delivered: {error}", seq=report.seq)

    def _lock(self, take: bool) -> bool:
        from updater.client import FleetError

        try:
            (self.client.pre_reboot if take else self.client.steady_state)()
        except FleetError as error:
            log("info", f"reboot lock {'not granted' if take else 'not released'}: {error}")
            return False
        return True

    def take_reboot_lock(self) -> bool:
        return self._lock(True)

    def release_reboot_lock(self) -> bool:
        return self._lock(False)
