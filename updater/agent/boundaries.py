"""The agent's boundaries that are not the host's own files: who paces its updates
(one small interface, two strategies) and the signed repository it installs from.

``Standalone`` is a host with no fleet server: it takes the newest release,
reboots in its own maintenance window (if set), locks are always free and
reports go only to the journal. ``ServerFleet`` speaks to `berth serve`
through updater.client.FleetClient, which paces reboots itself.
``SignedRepository`` is what the agent asks of updater.agent.fetch.TufRepository.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from updater.agent.journal import log
from updater.agent.settings import AgentSettings
from updater.agent.swarmjoin import FleetUnreachable, JoinRefused
from updater.atomic import atomic_write
from updater.release import Release
from updater.version import Version
from updater.window import Window
from updater.wire import Report, SwarmTokens

if TYPE_CHECKING:
    from updater.client import FleetClient

T = TypeVar("T")

# The host credential the fleet server gave this host at enrolment; it proves the
# host is who its node id says, so only root may read it.
CREDENTIAL_FILE = "host-credential"


@dataclass(frozen=True)
class Offer:
    allowed: bool  # may the agent update now at all
    version: Version | None  # the version to take; None with allowed: the newest it may take
    reason: str
    poll_after_s: int | None = None  # the server's pace, overriding the poll interval


class UpdateStrategy(Protocol):
    """Who paces this host's updates (as Zincati's update strategies do): what to take,
    when it may reboot, and who hears how it went. Not the fleet server's own state."""

    def offer(self, current: Version, bad: tuple[Version, ...], image_id: str) -> Offer: ...
    def report(self, report: Report) -> None: ...
    def take_reboot_lock(self) -> bool: ...
    def release_reboot_lock(self) -> bool: ...
    def reboot_window(self) -> Window | None: ...


class SignedTarget(Protocol):
    """A target's signed length and hashes (tuf's TargetFile)."""

    @property
    def length(self) -> int: ...
    @property
    def hashes(self) -> dict[str, str]: ...


class SignedRepository(Protocol):
    """The verified repository, refreshed once per step."""

    def refresh(self) -> list[Release]: ...
    def target(self, path: str) -> SignedTarget: ...
    # ``info`` is what target() returned: each repository streams its own kind.
    def stream(self, info: Any, offset: int) -> Iterator[bytes]: ...
    # Deltas (updater/agent/delta.py): a target it may not sign (then None), a small
    # target whole and checked, and ranges of a blob kept beside the targets.
    def optional_target(self, path: str) -> SignedTarget | None: ...
    def read_target(self, info: Any) -> bytes: ...
    def read_range(self, path: str, sha256: str, start: int, end: int) -> bytes | None: ...


class Standalone:
    def __init__(self, window: Window | None = None) -> None:
        self.window = window

    @classmethod
    def from_settings(cls, settings: AgentSettings) -> Standalone:
        text = settings.maintenance_window
        return cls(Window.parse(text) if text else None)

    def reboot_window(self) -> Window | None:
        """The daily window a staged update reboots in: nobody else paces this host."""
        return self.window

    def offer(self, current: Version, bad: tuple[Version, ...], image_id: str) -> Offer:
        return Offer(True, None, "standalone: newest signed release")

    def report(self, report: Report) -> None:
        """No server to tell: the agent's journal record of the event is the report."""

    def take_reboot_lock(self) -> bool:
        return True

    def release_reboot_lock(self) -> bool:
        return True


class ServerFleet:
    def __init__(
        self,
        server_url: str,
        node_id: str,
        group: str,
        token: str = "",
        *,
        credential_file: Path,
        verify: str | bool = True,
        swarm_role: str = "",
    ) -> None:
        self.credential_file = credential_file
        self.swarm_role = swarm_role or None
        self._params = (server_url, node_id, group, token or None, verify)
        self._client: FleetClient | None = None

    @property
    def client(self) -> FleetClient:
        # Made on first use, in the agent's step (a child process, service.step_apart),
        # not at its start: each step reads the credential an earlier step may have kept.
        if self._client is None:
            from updater.client import FleetClient

            server_url, node_id, group, token, verify = self._params
            kept = self.credential_file.read_text().strip() if self.credential_file.is_file() else ""
            self._client = FleetClient(
                server_url,
                node_id,
                group,
                token=token,
                credential=kept or None,
                on_enrol=self._keep,
                verify=verify,
            )
        return self._client

    @classmethod
    def from_settings(cls, settings: AgentSettings, node_id: str) -> ServerFleet:
        return cls(
            settings.server_url,
            node_id,
            settings.group,
            settings.fleet_token,
            credential_file=Path(settings.state_dir) / CREDENTIAL_FILE,
            verify=settings.tls_verify,
            swarm_role=settings.swarm_role,
        )

    def _keep(self, credential: str) -> None:
        atomic_write(self.credential_file, credential.encode(), mode=0o600)
        log("info", f"enrolled with the fleet server; credential in {self.credential_file}")

    def offer(self, current: Version, bad: tuple[Version, ...], image_id: str) -> Offer:
        from updater.client import FleetError

        try:
            decision = self.client.check(str(current), bad_versions=tuple(map(str, bad)), image_id=image_id,
                                         swarm_role=self.swarm_role)
        except FleetError as error:
            return Offer(False, None, f"fleet server: {error}")
        # The decision's version was checked as it came off the wire (UpdateDecision.from_json).
        offered = None if decision.target_version is None else Version.parse(decision.target_version)
        return Offer(
            offered is not None,
            offered,
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
        # Journalled both ways, so a host's own journal orders the lock against its hooks
        # and reboot (the fleet server's lock log has only the grants and releases).
        log("info", "reboot lock granted" if take else "reboot lock given back")
        return True

    def reboot_window(self) -> Window | None:
        """None: the server's rollout holds this host to its windows (offers and locks)."""
        return None

    def take_reboot_lock(self) -> bool:
        return self._lock(True)

    def release_reboot_lock(self) -> bool:
        return self._lock(False)

    # ---- the group's swarm join tokens (updater/agent/swarmjoin.SwarmFleet) ----

    def swarm_tokens(self) -> SwarmTokens | None:
        try:
            return self._swarm_call(self.client.swarm_join)
        except JoinRefused as refusal:
            if refusal.kind == "no_swarm":  # no manager of the group posted them yet
                return None
            raise

    def post_swarm_tokens(self, manager_addr: str, manager_token: str, worker_token: str) -> None:
        self._swarm_call(lambda: self.client.post_swarm_tokens(manager_addr, manager_token, worker_token))

    @staticmethod
    def _swarm_call(call: Callable[[], T]) -> T:
        from updater.client import FleetRejected, FleetUnavailable

        try:
            return call()
        except FleetRejected as error:
            raise JoinRefused(error.kind, str(error)) from None
        except FleetUnavailable as error:
            raise FleetUnreachable(str(error)) from None
