"""The fleet server's HTTP surface (ASGI, Starlette): thin handlers over policy and store.

Handlers parse with updater.wire, ask the pure policy, and let the store apply
the answer in a transaction. The database calls are short and synchronous on
purpose: one connection per process, no thread hops on the hot path; scale
out with more processes (`berth serve --workers N`).
"""

from __future__ import annotations

import hmac
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from updater.fleet import policy as pol
from updater.fleet.catalog import Catalog
from updater.fleet.hoststate import ReportRejected
from updater.fleet.locks import LockOutcome
from updater.fleet.metrics import render_metrics
from updater.fleet.openapi import openapi_schema
from updater.fleet.settings import GroupPolicy
from updater.fleet.store import HostRow, Store
from updater.wire import (
    CHECK_PATH,
    FLEETLOCK_HEADER,
    PRE_REBOOT_PATH,
    REPO_PATH,
    REPORTS_PATH,
    STEADY_STATE_PATH,
    FleetLockError,
    FleetLockRequest,
    Report,
    UpdateCheck,
    UpdateDecision,
    WireError,
)

SERVE_ENV = "BERTH_FLEET_SERVE"


class Refused(Exception):
    """A request answered with a 4xx; FleetLock endpoints render ``kind`` too."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


@dataclass
class Fleet:
    catalog: Catalog
    store: Store
    test_clock: bool  # time may be moved by POST /admin/clock (simulator and tests only)

    def now(self) -> float:
        return time.time() + (self.store.clock_offset() if self.test_clock else 0.0)

    def policy(self, name: str) -> GroupPolicy:
        policy = self.catalog.current().settings.groups.get(name)
        if policy is None:
            raise Refused(404, "unknown_group", f"unknown group {name!r}")
        return policy

    def group(self, name: str, request: Request) -> GroupPolicy:
        """The group's policy, for a request that must carry the group's token if it has one."""
        policy = self.policy(name)
        if policy.token is not None and not _bearer_matches(request, policy.token):
            raise Refused(401, "unauthorized", f"group {name!r} needs its bearer token")
        return policy


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
        return json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        raise Refused(400, "bad_request", "body is not valid JSON") from None


def _error(refused: Refused, fleetlock: bool) -> JSONResponse:
    if fleetlock:
        return JSONResponse(FleetLockError(refused.kind, refused.message).to_json(), refused.status)
    return JSONResponse({"error": refused.message}, refused.status)


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
async def check(request: Request, fleet: Fleet) -> Response:
    snapshot = fleet.catalog.current()
    body = UpdateCheck.from_json(await _json_body(request, snapshot.settings.max_body_bytes))
    policy = fleet.group(body.group, request)
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
    policy = fleet.group(report.group, request)
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
    return JSONResponse(
        {
            "node_id": request.path_params["node_id"],
            "reports": fleet.store.history(request.path_params["node_id"]),
        }
    )


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
    if not isinstance(advance, (int, float)) or isinstance(advance, bool) or advance < 0:
        raise Refused(400, "bad_request", 'body must be {"advance_s": <seconds >= 0>}')
    fleet.store.set_clock_offset(fleet.store.clock_offset() + advance)
    return JSONResponse({"now": fleet.now()})


async def metrics(request: Request) -> Response:
    fleet: Fleet = request.app.state.fleet
    return PlainTextResponse(
        render_metrics(fleet.store.counts(), fleet.now()), media_type="text/plain; version=0.0.4"
    )


async def schema(request: Request) -> Response:
    return JSONResponse(openapi_schema())


async def healthz(request: Request) -> Response:
    return JSONResponse({"ok": True})


def create_app(config: Path | None, db_url: str, *, test_clock: bool = False) -> Starlette:
    catalog = Catalog(config)
    fleet = Fleet(catalog, Store(db_url), test_clock)
    routes = [
        Route(CHECK_PATH, check, methods=["POST"]),
        Route(REPORTS_PATH, reports, methods=["POST"]),
        Route(PRE_REBOOT_PATH, pre_reboot, methods=["POST"]),
        Route(STEADY_STATE_PATH, steady_state, methods=["POST"]),
        Route("/admin/releases/{image_id}/{version}/{action}", change_release, methods=["POST"]),
        Route("/admin/reload", reload, methods=["POST"]),
        Route("/admin/status", status, methods=["GET"]),
        Route("/admin/hosts/{node_id}", history, methods=["GET"]),
        Route("/admin/timeline/{version}", timeline, methods=["GET"]),
        Route("/admin/locks/{group}", lock_log, methods=["GET"]),
        Route("/admin/updates/{group}", update_log, methods=["GET"]),
        Route("/admin/clock", clock, methods=["POST"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", schema, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Mount(
            REPO_PATH, StaticFiles(directory=catalog.current().settings.repository, check_dir=False)
        ),
    ]
    app = Starlette(routes=routes)
    app.state.fleet = fleet
    return app


def app_from_env() -> Starlette:
    """The factory each `berth serve --workers N` process calls (settings come via the environment)."""
    spec = json.loads(os.environ[SERVE_ENV])
    config = Path(spec["config"]) if spec["config"] else None
    return create_app(config, spec["db"], test_clock=spec["test_clock"])
