"""The fleet client: what an agent (or the simulator) says to `berth serve`.

Stdlib only: it runs on the host image and stays resident in the idle agent
(updater/transport.py says why not requests). One ``FleetClient`` per node. Its
first call enrols the node (with the group's token, if any) and keeps the host
credential the server answers with (``on_enrol`` stores it); every
call after that carries it. TLS is verified against ``verify`` (a CA bundle
file, or True: the system's CAs). Every call has a timeout and fails with a
typed error:

- ``FleetUnavailable``: no answer (connection refused, timeout, 5xx) or 429. Retry later.
- ``FleetRejected``: the server refused the request (4xx); ``status``, ``kind`` and ``message``.
- ``LockDenied`` (a FleetRejected): a FleetLock refusal; ``kind`` is the protocol's
  low-cardinality kind, e.g. ``failed_lock_semaphore_full``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from updater.transport import DEFAULT_TIMEOUT, Timeout, Transport, TransportError
from updater.wire import (
    CHECK_PATH,
    ENROL_PATH,
    FLEETLOCK_HEADER,
    HOST_CREDENTIAL_HEADER,
    PRE_REBOOT_PATH,
    REPO_PATH,
    REPORTS_PATH,
    STEADY_STATE_PATH,
    SWARM_JOIN_PATH,
    SWARM_TOKENS_PATH,
    Enrolment,
    FleetLockError,
    FleetLockRequest,
    Report,
    SwarmJoin,
    SwarmTokens,
    UpdateCheck,
    UpdateDecision,
    WireError,
)


class FleetError(Exception):
    """Base of every error this client raises."""


class FleetUnavailable(FleetError):
    """The server could not be reached or failed (network error, timeout, 5xx)."""


class FleetRejected(FleetError):
    """The server refused the request (4xx): retrying the same request will not help."""

    def __init__(self, status: int, message: str, kind: str = "") -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message, self.kind = status, message, kind


class LockDenied(FleetRejected):
    """A FleetLock refusal, e.g. kind 'failed_lock_semaphore_full': try again later."""

    def __init__(self, status: int, kind: str, value: str) -> None:
        super().__init__(status, f"{kind}: {value}", kind)
        self.value = value


class FleetClient:
    """Talks to one fleet server as one node of one group."""

    def __init__(
        self,
        server_url: str,
        node_id: str,
        group: str,
        *,
        token: str | None = None,
        credential: str | None = None,
        on_enrol: Callable[[str], None] = lambda _: None,
        verify: bool | str = True,
        timeout: Timeout = DEFAULT_TIMEOUT,
        transport: Transport | None = None,
    ) -> None:
        """``transport``: a connection to share (one per thread) among clients of one server."""
        self.server_url = server_url.rstrip("/")
        self.node_id, self.group = node_id, group
        self.credential, self.on_enrol = credential, on_enrol
        self.transport = transport or Transport(self.server_url, verify=verify, timeout=timeout)
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}

    @property
    def repository_url(self) -> str:
        """Base URL of the TUF repository (metadata/ and targets/ below it)."""
        return self.server_url + REPO_PATH

    def _post(self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
        try:
            status, answer = self.transport.post(
                path, json.dumps(body).encode(), {**self._headers, **(headers or {})}
            )
        except TransportError as error:
            raise FleetUnavailable(f"{path}: {error}") from None
        if status >= 500 or status == 429:  # 429: rate-limited, later
            raise FleetUnavailable(f"{path}: HTTP {status}")
        try:
            data = json.loads(answer)
        except ValueError:
            data = None
        if status >= 400:
            if path in (PRE_REBOOT_PATH, STEADY_STATE_PATH) and isinstance(data, dict):
                try:
                    refusal = FleetLockError.from_json(data)
                except WireError:
                    refusal = None
                if refusal is not None:
                    raise LockDenied(status, refusal.kind, refusal.value)
            message = data.get("error") if isinstance(data, dict) else None
            kind = data.get("kind") if isinstance(data, dict) else None
            text = answer[:200].decode(errors="replace")
            raise FleetRejected(status, str(message or text), str(kind or ""))
        return data

    def enrol(self) -> str:
        """Claim this node id in its group; the server answers with the host's credential."""
        data = self._post(ENROL_PATH, Enrolment(self.node_id, self.group).to_json())
        credential = data.get("credential") if isinstance(data, dict) else None
        if not isinstance(credential, str) or not credential:
            raise FleetUnavailable(f"{ENROL_PATH}: malformed answer (no credential)")
        self.credential = credential
        self.on_enrol(credential)
        return credential

    def _as_host(
        self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> Any:
        """A call that speaks for this node: enrol first if it has no credential yet, and
        once more if the server no longer knows it (an admin made it forget the node)."""
        if self.credential is None:
            self.enrol()
        try:
            return self._post(path, body, self._host_headers(headers))
        except FleetRejected as error:
            if error.kind != "not_enrolled":
                raise
        self.enrol()
        return self._post(path, body, self._host_headers(headers))

    def _host_headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        return {HOST_CREDENTIAL_HEADER: str(self.credential), **(extra or {})}

    def check(
        self, current_version: str, *, bad_versions: Iterable[str] = (), image_id: str = "berth",
        swarm_role: str | None = None,
    ) -> UpdateDecision:
        """May this node update now, and to what? (target_version None: not now)."""
        body = UpdateCheck(self.node_id, self.group, current_version, image_id, tuple(bad_versions),
                           swarm_role)
        data = self._as_host(CHECK_PATH, body.to_json())
        try:
            return UpdateDecision.from_json(data)
        except WireError as error:
            raise FleetUnavailable(f"{CHECK_PATH}: malformed answer ({error})") from None

    def report(self, report: Report) -> None:
        """Tell the server about one step; FleetRejected(409) means replayed or out of order."""
        self._as_host(REPORTS_PATH, report.to_json())

    def _lock(self, path: str) -> None:
        self._as_host(
            path, FleetLockRequest(self.node_id, self.group).to_json(), {FLEETLOCK_HEADER: "true"}
        )

    def pre_reboot(self) -> None:
        """Take (or renew) this node's reboot slot; LockDenied when none is free."""
        self._lock(PRE_REBOOT_PATH)

    def steady_state(self) -> None:
        """Give this node's reboot slot back (a no-op success when it holds none)."""
        self._lock(STEADY_STATE_PATH)

    def post_swarm_tokens(self, manager_addr: str, manager_token: str, worker_token: str) -> None:
        """As the group's first swarm manager: hand the join tokens to the group's hosts."""
        body = SwarmTokens(self.node_id, self.group, manager_addr, manager_token, worker_token)
        self._as_host(SWARM_TOKENS_PATH, body.to_json())

    def swarm_join(self) -> SwarmTokens:
        """The group's join tokens (FleetRejected 404: no manager posted them yet)."""
        data = self._as_host(SWARM_JOIN_PATH, SwarmJoin(self.node_id, self.group).to_json())
        try:
            return SwarmTokens.from_json(data)
        except WireError as error:
            raise FleetUnavailable(f"{SWARM_JOIN_PATH}: malformed answer ({error})") from None
