"""The fleet server's HTTP surface (ASGI, Starlette): handlers that only parse and render.

Handlers parse with updater.wire, authenticate through the server's state
(updater.fleet.server), which asks the pure deciders and lets the store apply
their effects in a transaction. The database calls are short and synchronous
on purpose: one connection per process, no thread hops on the hot path; scale
out with more processes (`berth serve --workers N`).
"""

from __future__ import annotations

import json
import math
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from updater.fleet import documents as doc
from updater.fleet import policy as pol
from updater.fleet.catalog import Catalog
from updater.fleet.hoststate import ReportRejected
from updater.fleet.locks import LockOutcome
from updater.fleet.metrics import render_metrics
from updater.fleet.openapi import openapi_schema
from updater.fleet.overview import status_document
from updater.fleet.server import Refused, ServerState, bearer_matches, credential_sha256
from updater.fleet.settings import GroupPolicy
from updater.fleet.store import Store
from updater.fleet.store_identities import EnrolRefused
from updater.wire import (
    CHECK_PATH,
    ENROL_PATH,
    FLEETLOCK_HEADER,
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
    WireError,
    is_name,
)

SERVE_ENV = "BERTH_FLEET_SERVE"


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
                return await handler(request, request.app.state.server)
            except Refused as refused:
                return _error(refused, fleetlock)
            except WireError as error:
                return _error(Refused(400, "bad_request", str(error)), fleetlock)

        return endpoint

    return wrap


# --- agent endpoints ---


@_guarded()
async def enrol(request: Request, server: ServerState) -> Response:
    snapshot = server.catalog.current()
    body = Enrolment.from_json(await _json_body(request, snapshot.settings.max_body_bytes))
    policy = server.group(body.group, request)
    server.may_enrol(request)
    credential = secrets.token_urlsafe(32)
    try:
        server.store.enrol(body.node_id, policy.name, credential_sha256(credential), server.now())
    except EnrolRefused as error:
        raise Refused(409, "already_enrolled", str(error)) from None
    return JSONResponse({"node_id": body.node_id, "group": policy.name, "credential": credential})


@_guarded()
async def check(request: Request, server: ServerState) -> Response:
    snapshot = server.catalog.current()
    body = UpdateCheck.from_json(await _json_body(request, snapshot.settings.max_body_bytes))
    policy = server.host_group(request, body.node_id, body.group)
    return JSONResponse(server.answer_check(policy, body).to_json())


@_guarded()
async def reports(request: Request, server: ServerState) -> Response:
    snapshot = server.catalog.current()
    report = Report.from_json(await _json_body(request, snapshot.settings.max_body_bytes))
    policy = server.host_group(request, report.node_id, report.group)
    try:
        state = server.store.record_report(report, policy, server.now())
    except ReportRejected as error:
        raise Refused(409, "rejected", str(error)) from None
    return JSONResponse(doc.ReportAccepted(True, state).to_json())


async def _lock_request(request: Request, server: ServerState) -> tuple[GroupPolicy, FleetLockRequest]:
    if request.headers.get(FLEETLOCK_HEADER, "").lower() != "true":
        raise Refused(400, "missing_header", f"header '{FLEETLOCK_HEADER}: true' is required")
    limit = server.catalog.current().settings.max_body_bytes
    body = FleetLockRequest.from_json(await _json_body(request, limit))
    # An enrolled host must prove it is that host; a node id never enrolled (a
    # Zincati-style client) is trusted on the group's token, or on nothing in a
    # group without one.
    identity = server.identity(request, body.node_id)
    if identity is not None:
        return server.enrolled_group(identity, body.group), body
    return server.group(body.group, request), body


@_guarded()
async def swarm_tokens(request: Request, server: ServerState) -> Response:
    """A group's first swarm manager hands its join tokens over its host credential."""
    body = SwarmTokens.from_json(await _json_body(request, server.catalog.current().settings.max_body_bytes))
    server.host_group(request, body.node_id, body.group)
    # Only a host whose own checks say it is a manager of this group may hand out a
    # manager token: a worker (or a host that never said) could otherwise make every
    # joining host a manager of a swarm of its choosing.
    if server.store.swarm_role(body.node_id) != (body.group, "manager"):
        raise Refused(403, "not_manager", f"node {body.node_id!r} has not said on a check that it is a"
                      f" swarm manager of {body.group!r} (swarm_role)")
    holder = server.store.put_swarm_tokens(body, server.now())
    if holder is not None:
        raise Refused(409, "other_manager", f"group {body.group!r} has the join tokens of {holder!r}")
    return JSONResponse({"accepted": True})


@_guarded()
async def swarm_join(request: Request, server: ServerState) -> Response:
    """A host of the group gets the join tokens (over its own host credential)."""
    body = SwarmJoin.from_json(await _json_body(request, server.catalog.current().settings.max_body_bytes))
    server.host_group(request, body.node_id, body.group)
    tokens = server.store.swarm_tokens(body.group)
    if tokens is None:
        raise Refused(404, "no_swarm", f"no manager of group {body.group!r} has posted join tokens yet")
    return JSONResponse(tokens.to_json())


@_guarded(fleetlock=True)
async def pre_reboot(request: Request, server: ServerState) -> Response:
    policy, body = await _lock_request(request, server)
    if not pol.window_open(policy.windows, policy.timezone, server.now()):
        raise Refused(409, "failed_outside_window", f"group {policy.name!r} is outside its windows")
    result = server.store.lock(policy, body.node_id, server.now)
    if result.outcome is LockOutcome.FULL:
        raise Refused(
            409,
            "failed_lock_semaphore_full",
            f"all {policy.max_concurrent_reboots} reboot slot(s) of {policy.name!r} are taken",
        )
    if result.outcome is LockOutcome.QUORUM:
        raise Refused(
            409,
            "failed_swarm_quorum",
            f"another swarm manager of {policy.name!r} down would leave too few for a majority",
        )
    return JSONResponse(doc.LockAnswer(result.outcome).to_json())


@_guarded(fleetlock=True)
async def steady_state(request: Request, server: ServerState) -> Response:
    policy, body = await _lock_request(request, server)
    result = server.store.unlock(policy, body.node_id, server.now)
    return JSONResponse(doc.LockAnswer(result.outcome).to_json())


# --- operators ---


def _admin(request: Request, server: ServerState) -> None:
    token = server.catalog.current().settings.admin_token
    if token is None:
        raise Refused(403, "unauthorized", "the admin API is off (no admin_token in the config)")
    if not bearer_matches(request, token):
        raise Refused(401, "unauthorized", "admin API needs 'Authorization: Bearer <admin_token>'")


@_guarded()
async def change_release(request: Request, server: ServerState) -> Response:
    _admin(request, server)
    params = request.path_params
    if params["action"] not in pol.ADMIN_TRANSITIONS:
        raise Refused(404, "bad_request", f"unknown action {params['action']!r}")
    releases = server.catalog.current().releases
    if not any(
        r.image_id == params["image_id"] and r.version == params["version"] for r in releases
    ):
        raise Refused(
            404, "unknown_release", f"no release {params['image_id']} {params['version']!r}"
        )
    try:
        state = server.store.change_release(
            params["image_id"], params["version"], params["action"], server.now()
        )
    except pol.ReleaseTransitionError as error:
        raise Refused(409, "rejected", str(error)) from None
    return JSONResponse(doc.ReleaseStatus(params["image_id"], params["version"], state).to_json())


@_guarded()
async def reload(request: Request, server: ServerState) -> Response:
    _admin(request, server)
    try:
        snapshot = server.catalog.reload()
    except (ValueError, OSError) as error:
        raise Refused(400, "bad_request", f"reload failed, old policies kept: {error}") from None
    return JSONResponse(
        doc.Reloaded(sorted(snapshot.settings.groups), [r.version for r in snapshot.releases]).to_json()
    )


@_guarded()
async def status(request: Request, server: ServerState) -> Response:
    _admin(request, server)
    snapshot = server.catalog.current()
    view = server.store.status_view(snapshot.settings.groups.values(), server.now())
    return JSONResponse(status_document(view, snapshot.releases).to_json())


@_guarded()
async def history(request: Request, server: ServerState) -> Response:
    _admin(request, server)
    node_id = request.path_params["node_id"]
    identity = server.store.identity(node_id)
    history = doc.HostHistory(
        node_id,
        identity.group if identity else None,
        [doc.ReportRecord(**row) for row in server.store.history(node_id)],
        [doc.HostEvent(**row) for row in server.store.host_events(node_id)],
        [doc.TransferRecord(**row) for row in server.store.transfers(node_id)],
    )
    return JSONResponse(history.to_json())


def _admin_node(request: Request, server: ServerState) -> str:
    _admin(request, server)
    node_id = request.path_params["node_id"]
    if not is_name(node_id):
        raise Refused(400, "bad_request", f"not a node id: {node_id!r}")
    return node_id


@_guarded()
async def move_host(request: Request, server: ServerState) -> Response:
    """Move an enrolled host to another group: the only way a host changes group."""
    node_id = _admin_node(request, server)
    body = await _json_body(request, 1024)
    if not isinstance(body, dict) or set(body) != {"group"} or not is_name(body["group"]):
        raise Refused(400, "bad_request", 'body must be {"group": "<group>"}')
    policy = server.policy(body["group"])
    try:
        before = server.store.move_host(node_id, policy.name, server.now())
    except EnrolRefused as error:
        raise Refused(404, "not_enrolled", str(error)) from None
    return JSONResponse(doc.HostMoved(node_id, policy.name, before).to_json())


@_guarded()
async def forget_host(request: Request, server: ServerState) -> Response:
    """Drop a host's credential (lost with its /var, or leaked): it may enrol again."""
    node_id = _admin_node(request, server)
    try:
        identity = server.store.forget_identity(node_id, server.now())
    except EnrolRefused as error:
        raise Refused(404, "not_enrolled", str(error)) from None
    return JSONResponse(doc.HostForgotten(node_id, identity.group, True).to_json())


@_guarded()
async def timeline(request: Request, server: ServerState) -> Response:
    _admin(request, server)
    version = request.path_params["version"]
    events = [doc.TimelineEvent(**row) for row in server.store.timeline(version)]
    return JSONResponse(doc.Timeline(version, events).to_json())


def _group_log(request: Request, server: ServerState) -> tuple[GroupPolicy, float | None]:
    """The group (admin only) and the ``since`` query of a log request."""
    _admin(request, server)
    policy = server.policy(request.path_params["group"])
    since = request.query_params.get("since")
    try:
        since_s = None if since is None else float(since)
    except ValueError:
        since_s = math.nan
    if since_s is not None and not math.isfinite(since_s):
        raise Refused(400, "bad_request", f"since must be seconds since the epoch, got {since!r}")
    return policy, since_s


@_guarded()
async def lock_log(request: Request, server: ServerState) -> Response:
    policy, since = _group_log(request, server)
    events = [doc.LockLogEvent(**row) for row in server.store.lock_log(policy.name, since)]
    return JSONResponse(doc.LockLog(policy.name, policy.max_concurrent_reboots, events).to_json())


@_guarded()
async def update_log(request: Request, server: ServerState) -> Response:
    policy, since = _group_log(request, server)
    rate = doc.Rate(policy.rate.max_updates, policy.rate.period_s)
    updates = [doc.CountedUpdate(**row) for row in server.store.update_log(policy.name, since)]
    return JSONResponse(doc.UpdateLog(policy.name, rate, updates).to_json())


@_guarded()
async def clock(request: Request, server: ServerState) -> Response:
    _admin(request, server)
    if not server.test_clock:
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
    server.store.set_clock_offset(server.store.clock_offset() + advance)
    return JSONResponse({"now": server.now()})


@_guarded()
async def metrics(request: Request, server: ServerState) -> Response:
    # Admin only: the labels name every group, which nothing else tells a stranger.
    _admin(request, server)
    return PlainTextResponse(
        render_metrics(server.store.counts(), server.now()), media_type="text/plain; version=0.0.4"
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
    server = ServerState(catalog, Store(db_url), test_clock)
    routes = [
        Route(ENROL_PATH, enrol, methods=["POST"]),
        Route(CHECK_PATH, check, methods=["POST"]),
        Route(REPORTS_PATH, reports, methods=["POST"]),
        Route(PRE_REBOOT_PATH, pre_reboot, methods=["POST"]),
        Route(STEADY_STATE_PATH, steady_state, methods=["POST"]),
        Route(SWARM_TOKENS_PATH, swarm_tokens, methods=["POST"]),
        Route(SWARM_JOIN_PATH, swarm_join, methods=["POST"]),
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
    app.state.server = server
    return app


def app_from_env() -> Starlette:
    """The factory each `berth serve --workers N` process calls (settings come via the environment)."""
    spec = json.loads(os.environ[SERVE_ENV])
    config = Path(spec["config"]) if spec["config"] else None
    return create_app(config, spec["db"], test_clock=spec["test_clock"])
