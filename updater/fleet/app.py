"""The fleet server's HTTP surface (ASGI, Starlette): thin handlers over policy and store.

Handlers parse with updater.wire, ask the pure policy, and let the store apply
the answer in a transaction. The database calls are short and synchronous on
purpose: one connection per process, no thread hops on the hot path; scale
out with more processes (`berth serve --workers N`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from updater.fleet import policy as pol
from updater.fleet.catalog import Catalog
from updater.fleet.hoststate import ReportRejected
from updater.fleet.locks import LockOutcome
from updater.fleet.metrics import render_metrics
from updater.fleet.openapi import openapi_schema
from updater.fleet.ratelimit import RateLimiter
from updater.fleet.settings import GroupPolicy
from updater.fleet.store import EnrolRefused, HostRow, Identity, Store
from updater.wire import (
    CHECK_PATH,
    ENROL_PATH,
    FLEETLOCK_HEADER,
    HOST_CREDENTIAL_HEADER,
    PRE_REBOOT_PATH,
    REPO_PATH,
    REPORTS_PATH,
    STEADY_STATE_PATH,
    Enrolment,
    FleetLockError,
    FleetLockRequest,
    Report,
    UpdateCheck,
    UpdateDecision,
    WireError,
    is_name,
)

SERVE_ENV = "BERTH_FLEET_SERVE"


class Refused(Exception):
    """A request answered with a 4xx; FleetLock endpoints render ``kind`` too."""

    def __init__(self, status: int, kind: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message
        self.retry_after_s = retry_after_s


@dataclass
class Fleet:
    catalog: Catalog
    store: Store
    test_clock: bool  # time may be moved by POST /admin/clock (simulator and tests only)
    enrolments: RateLimiter | None = None  # per client address; made from the settings' enrol_rate

    def now(self) -> float:
        return time.time() + (self.store.clock_offset() if self.test_clock else 0.0)

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
        if policy is None or (policy.token is not None and not _bearer_matches(request, policy.token)):
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


def _bearer_matches(request: Request, token: str) -> bool:
    given = request.headers.get("authorization", "")
    return given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), token.encode())


async def _json_body(request: Request, limit: int) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise Refused(413, "bad_request", f"body larger than {limit} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Refused(413, "bad_request", f"body larger than {limit} bytes")
    try:
        return json.loads(body, parse_constant=_no_constant)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        raise Refused(400, "bad_request", "body is not valid JSON") from None


def _no_constant(name: str) -> Any:
    """NaN and Infinity are Python's extension, not JSON."""
    raise ValueError(f"{name} is not JSON")


def _error(refused: Refused, fleetlock: bool) -> JSONResponse:
    if fleetlock:
        return JSONResponse(FleetLockError(refused.kind, refused.message).to_json(), refused.status)
    headers = {} if refused.retry_after_s is None else {"Retry-After": str(math.ceil(refused.retry_after_s))}
    return JSONResponse({"error": refused.message, "kind": refused.kind}, refused.status, headers)


def _guarded(fleetlock: bool = False) -> Callable[..., Any]:
    def wrap(handler: Callable[..., Any]) -> Callable[..., Any]:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request, request.app.state.fleet)
            except Refused as refused:
                return _error(refused, fleetlock)
            except WireError as error:
                return _error(Refused(400, "bad_request", str(error)), fleetlock)

        return endpoint

    return wrap


# --- agent endpoints ---


@_guarded()
async def enrol(request: Request, fleet: Fleet) -> Response:
    snapshot = fleet.catalog.current()
    body = Enrolment.from_json(await _json_body(request, snapshot.settings.max_body_bytes))
    policy = fleet.group(body.group, request)
    fleet.may_enrol(request)
    credential = secrets.token_urlsafe(32)
    try:
        fleet.store.enrol(body.node_id, policy.name, credential_sha256(credential), fleet.now())
    except EnrolRefused as error:
        raise Refused(409, "already_enrolled", str(error)) from None
    return JSONResponse({"node_id": body.node_id, "group": policy.name, "credential": credential})


@_guarded()
async def check(request: Request, fleet: Fleet) -> Response:
    snapshot = fleet.catalog.current()
    body = UpdateCheck.from_json(await _json_body(request, snapshot.settings.max_body_bytes))
    policy = fleet.host_group(request, body.node_id, body.group)
    decision = decide(fleet, policy, body)
    return JSONResponse(decision.to_json())


def decide(fleet: Fleet, policy: GroupPolicy, body: UpdateCheck) -> UpdateDecision:
    snapshot = fleet.catalog.current()
    poll = snapshot.settings.poll_interval_s
    now = fleet.now()
    channel = snapshot.settings.channels[policy.channel]
    release = None
    if body.image_id == channel.image_id:
        release = pol.choose_release(
            snapshot.releases, channel, body.current_version, body.bad_versions
        )
    if release is None:
        host = fleet.store.host(body.node_id)
        _observe(fleet, body, host, now)
        reason = (
            pol.Reason.UP_TO_DATE.value
            if body.image_id == channel.image_id
            else f"group follows image {channel.image_id!r}"
        )
        return UpdateDecision(None, reason, poll)
    host, state, rollout, prerequisite = fleet.store.decision_view(
        body.node_id, release.image_id, release.version, policy.name, policy.after
    )
    _observe(fleet, body, host, now)
    if rollout is None and pol.rollout_may_begin(
        policy, prerequisite.finished_at if prerequisite else None, now
    ):
        rollout = fleet.store.begin_rollout(policy.name, release.version, now)
    view = pol.RolloutView(
        state=state,
        started_at=rollout.started_at if rollout else None,
        halted_reason=rollout.halted_reason if rollout else None,
    )
    in_flight = host.target if host else None
    verdict = pol.decide(policy, body.node_id, release.version, in_flight, view, now)
    if verdict.needs_slot:
        try:
            started = fleet.store.start_update(
                policy, body.node_id, release.version, now, snapshot.settings.update_timeout_s
            )
        except ReportRejected:
            # The host is midway through another update; let it finish that one first.
            return UpdateDecision(in_flight, pol.Reason.IN_PROGRESS.value, poll)
        if not started:
            return UpdateDecision(None, pol.Reason.RATE_LIMITED.value, poll)
    return UpdateDecision(verdict.target, verdict.reason.value, poll)


def _observe(fleet: Fleet, body: UpdateCheck, host: HostRow | None, now: float) -> None:
    """Write the host only when it is new or changed: most checks then read and never write."""
    if host is None or host.version != body.current_version or host.group != body.group:
        fleet.store.observe(body.node_id, body.group, body.current_version, now)


@_guarded()
async def reports(request: Request, fleet: Fleet) -> Response:
    snapshot = fleet.catalog.current()
    report = Report.from_json(await _json_body(request, snapshot.settings.max_body_bytes))
    policy = fleet.host_group(request, report.node_id, report.group)
    try:
        state = fleet.store.record_report(report, policy, fleet.now())
    except ReportRejected as error:
        raise Refused(409, "rejected", str(error)) from None
    return JSONResponse({"accepted": True, "state": state.value})


async def _lock_request(request: Request, fleet: Fleet) -> tuple[GroupPolicy, FleetLockRequest]:
    if request.headers.get(FLEETLOCK_HEADER, "").lower() != "true":
        raise Refused(400, "missing_header", f"header '{FLEETLOCK_HEADER}: true' is required")
    limit = fleet.catalog.current().settings.max_body_bytes
    body = FleetLockRequest.from_json(await _json_body(request, limit))
    # An enrolled host must prove it is that host; a node id never enrolled (a
    # Zincati-style client) is trusted on the group's token, or on nothing in a
    # group without one.
    identity = fleet.identity(request, body.node_id)
    if identity is not None:
        return fleet.enrolled_group(identity, body.group), body
    return fleet.group(body.group, request), body


@_guarded(fleetlock=True)
async def pre_reboot(request: Request, fleet: Fleet) -> Response:
    policy, body = await _lock_request(request, fleet)
    if not pol.window_open(policy.windows, policy.timezone, fleet.now()):
        raise Refused(409, "failed_outside_window", f"group {policy.name!r} is outside its windows")
    result = fleet.store.lock(policy, body.node_id, fleet.now)
    if result.outcome is LockOutcome.FULL:
        raise Refused(
            409,
            "failed_lock_semaphore_full",
            f"all {policy.max_concurrent_reboots} reboot slot(s) of {policy.name!r} are taken",
        )
    return JSONResponse({"outcome": result.outcome.value})


@_guarded(fleetlock=True)
async def steady_state(request: Request, fleet: Fleet) -> Response:
    policy, body = await _lock_request(request, fleet)
    result = fleet.store.unlock(policy, body.node_id, fleet.now)
    return JSONResponse({"outcome": result.outcome.value})


# --- operators ---


def _admin(request: Request, fleet: Fleet) -> None:
    token = fleet.catalog.current().settings.admin_token
    if token is None:
        raise Refused(403, "unauthorized", "the admin API is off (no admin_token in the config)")
    if not _bearer_matches(request, token):
        raise Refused(401, "unauthorized", "admin API needs 'Authorization: Bearer <admin_token>'")


@_guarded()
async def change_release(request: Request, fleet: Fleet) -> Response:
    _admin(request, fleet)
    params = request.path_params
    if params["action"] not in pol.ADMIN_TRANSITIONS:
        raise Refused(404, "bad_request", f"unknown action {params['action']!r}")
    releases = fleet.catalog.current().releases
    if not any(
        r.image_id == params["image_id"] and r.version == params["version"] for r in releases
    ):
        raise Refused(
            404, "unknown_release", f"no release {params['image_id']} {params['version']!r}"
        )
    try:
        state = fleet.store.change_release(
            params["image_id"], params["version"], params["action"], fleet.now()
        )
    except pol.TransitionError as error:
        raise Refused(409, "rejected", str(error)) from None
    return JSONResponse(
        {"image_id": params["image_id"], "version": params["version"], "state": state.value}
    )


@_guarded()
async def reload(request: Request, fleet: Fleet) -> Response:
    _admin(request, fleet)
    try:
        snapshot = fleet.catalog.reload()
    except (ValueError, OSError) as error:
        raise Refused(400, "bad_request", f"reload failed, old policies kept: {error}") from None
    return JSONResponse(
        {
            "groups": sorted(snapshot.settings.groups),
            "releases": [r.version for r in snapshot.releases],
        }
    )


@_guarded()
async def status(request: Request, fleet: Fleet) -> Response:
    _admin(request, fleet)
    snapshot = fleet.catalog.current()
    body = fleet.store.status(dict(snapshot.settings.groups), fleet.now())
    body["catalog"] = [
        {"image_id": r.image_id, "version": r.version, "withdrawn": r.withdrawn}
        for r in snapshot.releases
    ]
    return JSONResponse(body)


@_guarded()
async def history(request: Request, fleet: Fleet) -> Response:
    _admin(request, fleet)
    node_id = request.path_params["node_id"]
    identity = fleet.store.identity(node_id)
    return JSONResponse(
        {
            "node_id": node_id,
            "group": identity.group if identity else None,
            "reports": fleet.store.history(node_id),
            "events": fleet.store.host_events(node_id),
            "transfers": fleet.store.transfers(node_id),
        }
    )


def _admin_node(request: Request, fleet: Fleet) -> str:
    _admin(request, fleet)
    node_id = request.path_params["node_id"]
    if not is_name(node_id):
        raise Refused(400, "bad_request", f"not a node id: {node_id!r}")
    return node_id


@_guarded()
async def move_host(request: Request, fleet: Fleet) -> Response:
    """Move an enrolled host to another group: the only way a host changes group."""
    node_id = _admin_node(request, fleet)
    body = await _json_body(request, 1024)
    if not isinstance(body, dict) or set(body) != {"group"} or not is_name(body["group"]):
        raise Refused(400, "bad_request", 'body must be {"group": "<group>"}')
    policy = fleet.policy(body["group"])
    try:
        before = fleet.store.move_host(node_id, policy.name, fleet.now())
    except EnrolRefused as error:
        raise Refused(404, "not_enrolled", str(error)) from None
    return JSONResponse({"node_id": node_id, "group": policy.name, "was": before})


@_guarded()
async def forget_host(request: Request, fleet: Fleet) -> Response:
    """Drop a host's credential (lost with its /var, or leaked): it may enrol again."""
    node_id = _admin_node(request, fleet)
    try:
        identity = fleet.store.forget_identity(node_id, fleet.now())
    except EnrolRefused as error:
        raise Refused(404, "not_enrolled", str(error)) from None
    return JSONResponse({"node_id": node_id, "group": identity.group, "forgotten": True})


@_guarded()
async def timeline(request: Request, fleet: Fleet) -> Response:
    _admin(request, fleet)
    version = request.path_params["version"]
    return JSONResponse({"version": version, "events": fleet.store.timeline(version)})


def _group_log(request: Request, fleet: Fleet) -> tuple[GroupPolicy, float | None]:
    """The group (admin only) and the ``since`` query of a log request."""
    _admin(request, fleet)
    policy = fleet.policy(request.path_params["group"])
    since = request.query_params.get("since")
    try:
        since_s = None if since is None else float(since)
    except ValueError:
        since_s = math.nan
    if since_s is not None and not math.isfinite(since_s):
        raise Refused(400, "bad_request", f"since must be seconds since the epoch, got {since!r}")
    return policy, since_s


@_guarded()
async def lock_log(request: Request, fleet: Fleet) -> Response:
    policy, since = _group_log(request, fleet)
    return JSONResponse(
        {
            "group": policy.name,
            "max_concurrent_reboots": policy.max_concurrent_reboots,
            "events": fleet.store.lock_log(policy.name, since),
        }
    )


@_guarded()
async def update_log(request: Request, fleet: Fleet) -> Response:
    policy, since = _group_log(request, fleet)
    return JSONResponse(
        {
            "group": policy.name,
            "rate": {"max_updates": policy.rate.max_updates, "period_s": policy.rate.period_s},
            "updates": fleet.store.update_log(policy.name, since),
        }
    )


@_guarded()
async def clock(request: Request, fleet: Fleet) -> Response:
    _admin(request, fleet)
    if not fleet.test_clock:
        raise Refused(
            404, "bad_request", "the clock is only movable under `berth serve --test-clock`"
        )
    body = await _json_body(request, 1024)
    advance = body.get("advance_s") if isinstance(body, dict) else None
    if (
        not isinstance(advance, (int, float))
        or isinstance(advance, bool)
        or not 0 <= advance < math.inf  # json reads 1e999 as infinity
    ):
        raise Refused(400, "bad_request", 'body must be {"advance_s": <seconds >= 0>}')
    fleet.store.set_clock_offset(fleet.store.clock_offset() + advance)
    return JSONResponse({"now": fleet.now()})


@_guarded()
async def metrics(request: Request, fleet: Fleet) -> Response:
    # Admin only: the labels name every group, which nothing else tells a stranger.
    _admin(request, fleet)
    return PlainTextResponse(
        render_metrics(fleet.store.counts(), fleet.now()), media_type="text/plain; version=0.0.4"
    )


async def schema(request: Request) -> Response:
    return JSONResponse(openapi_schema())


async def healthz(request: Request) -> Response:
    return JSONResponse({"ok": True})


class _Repository(StaticFiles):
    """The TUF repository: a path no file can have (a NUL byte, say) is a 404, not a 500."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            return await super().get_response(path, scope)
        except (ValueError, OSError):
            raise HTTPException(404) from None


async def _http_error(request: Request, error: Exception) -> Response:
    """Starlette's own refusals (no such route, wrong method, no such file) as JSON too."""
    assert isinstance(error, HTTPException)
    return JSONResponse({"error": error.detail}, error.status_code, headers=error.headers)


def create_app(config: Path | None, db_url: str, *, test_clock: bool = False) -> Starlette:
    catalog = Catalog(config)
    fleet = Fleet(catalog, Store(db_url), test_clock)
    routes = [
        Route(ENROL_PATH, enrol, methods=["POST"]),
        Route(CHECK_PATH, check, methods=["POST"]),
        Route(REPORTS_PATH, reports, methods=["POST"]),
        Route(PRE_REBOOT_PATH, pre_reboot, methods=["POST"]),
        Route(STEADY_STATE_PATH, steady_state, methods=["POST"]),
        Route("/admin/releases/{image_id}/{version}/{action}", change_release, methods=["POST"]),
        Route("/admin/reload", reload, methods=["POST"]),
        Route("/admin/status", status, methods=["GET"]),
        Route("/admin/hosts/{node_id}", history, methods=["GET"]),
        Route("/admin/hosts/{node_id}/move", move_host, methods=["POST"]),
        Route("/admin/hosts/{node_id}/forget", forget_host, methods=["POST"]),
        Route("/admin/timeline/{version}", timeline, methods=["GET"]),
        Route("/admin/locks/{group}", lock_log, methods=["GET"]),
        Route("/admin/updates/{group}", update_log, methods=["GET"]),
        Route("/admin/clock", clock, methods=["POST"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", schema, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Mount(
            REPO_PATH, _Repository(directory=catalog.current().settings.repository, check_dir=False)
        ),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    app.state.fleet = fleet
    return app


def app_from_env() -> Starlette:
    """The factory each `berth serve --workers N` process calls (settings come via the environment)."""
    spec = json.loads(os.environ[SERVE_ENV])
    config = Path(spec["config"]) if spec["config"] else None
    return create_app(config, spec["db"], test_clock=spec["test_clock"])
