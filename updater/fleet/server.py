"""The fleet server's own state (catalog, store, clock, enrolment limiter) and what it
answers a host, between the HTTP handlers (updater.fleet.app) and the pure deciders.

``ServerState`` is the server's side only; the agent's view of a server is its
``updater.agent.boundaries.ServerFleet`` strategy.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from dataclasses import dataclass

from starlette.requests import Request

from updater.fleet.catalog import Catalog
from updater.fleet.decision import decide_update, offered_release, settle
from updater.fleet.ratelimit import RateLimiter
from updater.fleet.records import Identity
from updater.fleet.settings import GroupPolicy
from updater.fleet.store import Store
from updater.wire import ENROL_PATH, HOST_CREDENTIAL_HEADER, UpdateCheck, UpdateDecision


class Refused(Exception):
    """A request answered with a 4xx; FleetLock endpoints render ``kind`` too."""

    def __init__(self, status: int, kind: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message
        self.retry_after_s = retry_after_s


@dataclass
class ServerState:
    catalog: Catalog
    store: Store
    test_clock: bool  # time may be moved by POST /admin/clock (simulator and tests only)
    enrolments: RateLimiter | None = None  # per client address; made from the settings' enrol_rate

    def now(self) -> float:
        return time.time() + (self.store.clock_offset() if self.test_clock else 0.0)

    def answer_check(self, policy: GroupPolicy, check: UpdateCheck) -> UpdateDecision:
        """Read the view, decide (pure), apply the effects in one transaction, settle the slot."""
        snapshot = self.catalog.current()
        settings = snapshot.settings
        now = self.now()
        channel = settings.channels[policy.channel]
        release = offered_release(check, channel, snapshot.releases)
        view = (
            self.store.check_view(
                check.node_id, release.image_id, release.version, policy.name, policy.after
            )
            if release is not None
            else self.store.check_view_of_host(check.node_id)
        )
        decision, effects = decide_update(check, policy, channel, release, view, now)
        slot = self.store.apply_check(effects, policy, now, settings.update_timeout_s)
        target, reason = settle(decision, slot)
        return UpdateDecision(target, reason, settings.poll_interval_s)

    def may_enrol(self, request: Request) -> None:
        """Refuse (429) a client address past the settings' enrol_rate."""
        rate = self.catalog.current().settings.enrol_rate
        if rate == 0:
            return
        if self.enrolments is None or self.enrolments.per_minute != rate:  # first call, or reloaded
            self.enrolments = RateLimiter(rate)
        address = request.client.host if request.client else ""
        wait = self.enrolments.take(address, self.now())
        if wait > 0:
            raise Refused(429, "too_many_requests",
                          f"more than {rate} enrolments a minute from {address}; try again in {math.ceil(wait)} s",
                          retry_after_s=wait)

    def policy(self, name: str) -> GroupPolicy:
        policy = self.catalog.current().settings.groups.get(name)
        if policy is None:
            raise Refused(404, "unknown_group", f"unknown group {name!r}")
        return policy

    def group(self, name: str, request: Request) -> GroupPolicy:
        """The group's policy, for a request that must carry the group's token if it has one.

        An unknown group is refused like a wrong token, so the answer tells no one
        without the token which groups exist."""
        policy = self.catalog.current().settings.groups.get(name)
        if policy is None or (policy.token is not None and not bearer_matches(request, policy.token)):
            raise Refused(
                401, "unauthorized", f"group {name!r} is unknown or needs its bearer token"
            )
        return policy

    def identity(self, request: Request, node_id: str) -> Identity | None:
        """The node's identity if it is enrolled, for a request that must carry its credential."""
        identity = self.store.identity(node_id)
        if identity is None:
            return None
        given = request.headers.get(HOST_CREDENTIAL_HEADER, "")
        if not hmac.compare_digest(credential_sha256(given), identity.credential_sha256):
            raise Refused(
                401,
                "unauthorized",
                f"node {node_id!r} needs its host credential (header {HOST_CREDENTIAL_HEADER})",
            )
        return identity

    def enrolled_group(self, identity: Identity, group: str) -> GroupPolicy:
        """The policy of the group the host is enrolled in, which the request must name."""
        if identity.group != group:
            raise Refused(
                409,
                "wrong_group",
                f"node {identity.node_id!r} is in group {identity.group!r};"
                " only an admin moves hosts (POST /admin/hosts/<node>/move)",
            )
        return self.policy(identity.group)

    def host_group(self, request: Request, node_id: str, group: str) -> GroupPolicy:
        """The group of an enrolled host that proved who it is (check and reports)."""
        identity = self.identity(request, node_id)
        if identity is None:
            raise Refused(
                401, "not_enrolled", f"node {node_id!r} is not enrolled: POST {ENROL_PATH} first"
            )
        return self.enrolled_group(identity, group)


def credential_sha256(credential: str) -> str:
    """What the store keeps of a host credential (256 random bits: a plain hash suffices)."""
    return hashlib.sha256(credential.encode("utf-8", "surrogateescape")).hexdigest()


def bearer_matches(request: Request, token: str) -> bool:
    given = request.headers.get("authorization", "")
    return given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), token.encode())
