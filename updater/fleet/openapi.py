"""The OpenAPI 3 description of `berth serve`: the agent's bodies built from the wire
module's rules, every admin answer generated from its typed document (updater.fleet.documents)."""

from __future__ import annotations

import functools
from typing import Any

from updater import wire
from updater.fleet import documents as doc
from updater.fleet.documents import NAME_SCHEMA as _NAME
from updater.fleet.documents import VERSION_SCHEMA as _VERSION
from updater.fleet.documents import schema_of
from updater.fleet.policy import ADMIN_TRANSITIONS

_ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "kind": {"type": "string"}},
    "required": ["error"],
}
_LOCK_ERROR = {
    "type": "object",
    "properties": {"kind": {"type": "string"}, "value": {"type": "string"}},
    "required": ["kind", "value"],
}


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _post(
    summary: str,
    body: dict[str, Any],
    ok: dict[str, Any],
    errors: dict[str, str],
    error_schema: dict[str, Any] = _ERROR,
    **extra: Any,
) -> dict[str, Any]:
    responses = {"200": _json(ok, "success")}
    responses.update({code: _json(error_schema, text) for code, text in errors.items()})
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
            "responses": responses,
            **extra,
        }
    }


_AGENT_ERRORS = {
    "400": "malformed body",
    "401": "host credential (or, for a node never enrolled, the group token) missing or wrong;"
    " unknown group",
    "404": "the host's group is gone from the config",
    "409": "the host is enrolled in another group",
    "413": "body too large",
}
_CREDENTIAL_HEADER = {
    "name": wire.HOST_CREDENTIAL_HEADER,
    "in": "header",
    "required": False,
    "description": "the credential POST /v1/enrol returned",
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,128}$"},
}
_LOCK_BODY = _object(
    {"client_params": _object({"id": _NAME, "group": _NAME}, ["id", "group"])}, ["client_params"]
)
_LOCK_HEADER = [
    {
        "name": wire.FLEETLOCK_HEADER,
        "in": "header",
        "required": True,
        "schema": {"type": "string", "enum": ["true"]},
    },
    _CREDENTIAL_HEADER,
]
_ADMIN: list[dict[str, list[str]]] = [{"bearer": []}]


def _admin_get(
    summary: str,
    params: list[str],
    ok: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    query: tuple[dict[str, Any], ...] = (),
) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "security": _ADMIN,
            "parameters": [
                {"name": p, "in": "path", "required": True, "schema": _NAME} for p in params
            ]
            + list(query),
            "responses": {
                "200": _json(ok or {"type": "object"}, "success"),
                "400": _json(_ERROR, "malformed parameter"),
                "401": _json(_ERROR, "admin token missing or wrong"),
                "403": _json(_ERROR, "admin API off"),
                **{code: _json(_ERROR, text) for code, text in (errors or {}).items()},
            },
        }
    }


def _group_log(summary: str, ok: dict[str, Any], since: str) -> dict[str, Any]:
    """An admin log of one group, from ``since`` (server time, epoch seconds) on if given."""
    return _admin_get(
        summary,
        ["group"],
        ok,
        {"400": "since is not a number", "404": "unknown group"},
        (
            {
                "name": "since",
                "in": "query",
                "required": False,
                "description": since,
                "schema": {"type": "number"},
            },
        ),
    )


@functools.cache
def openapi_schema() -> dict[str, Any]:
    check = _object(
        {
            "node_id": _NAME,
            "group": _NAME,
            "current_version": _VERSION,
            "image_id": _NAME,
            "bad_versions": {"type": "array", "items": _VERSION},
            "swarm_role": {"type": "string", "enum": list(wire.SWARM_ROLES)},
        },
        ["node_id", "group", "current_version"],
    )
    decision = _object(
        {
            "target_version": {**_VERSION, "nullable": True},
            "reason": {"type": "string"},
            "poll_after_s": {"type": "integer"},
        },
        ["target_version", "reason", "poll_after_s"],
    )
    report = _object(
        {
            "node_id": _NAME,
            "group": _NAME,
            "seq": {"type": "integer", "minimum": 0},
            "event": {"type": "string", "enum": [e.value for e in wire.ReportEvent]},
            "version": _VERSION,
            "from_version": _VERSION,
            "detail": {"type": "string"},
            "extra": {"type": "object"},
            "cause": {"type": "string", "enum": [c.value for c in wire.RollbackCause]},
            "transfer": _object(
                {
                    "path": {"type": "string", "enum": list(wire.TRANSFER_PATHS)},
                    "bytes_fetched": {"type": "integer", "minimum": 0},
                    "bytes_full": {"type": "integer", "minimum": 0},
                },
                ["path", "bytes_fetched", "bytes_full"],
            ),
        },
        ["node_id", "group", "seq", "event", "version", "from_version"],
    )
    outcome = schema_of(doc.LockAnswer)
    lock_errors = {
        **_AGENT_ERRORS,
        "409": "semaphore full, outside the maintenance windows, or the host is in another group",
    }
    enrolment = _object({"node_id": _NAME, "group": _NAME}, ["node_id", "group"])
    enrolled = _object(
        {"node_id": _NAME, "group": _NAME, "credential": {"type": "string", "minLength": 32}},
        ["node_id", "group", "credential"],
    )
    admin_errors = {
        "400": "malformed body or parameter",
        "401": "admin token",
        "403": "admin API off",
        "404": "unknown group, or the host is not enrolled",
    }
    token = {"type": "string", "pattern": wire.JOIN_TOKEN_PATTERN}
    tokens = _object(
        {
            "node_id": _NAME,
            "group": _NAME,
            "manager_addr": {"type": "string", "pattern": wire.ADDR_PATTERN},
            "manager_token": token,
            "worker_token": token,
        },
        ["node_id", "group", "manager_addr", "manager_token", "worker_token"],
    )
    release_path = "/admin/releases/{image_id}/{version}/{action}"
    return {
        "openapi": "3.0.3",
        "info": {"title": "berth fleet server", "version": "1"},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": {
            wire.ENROL_PATH: _post(
                "First contact: claim a node id in a group, get the host's credential",
                enrolment,
                enrolled,
                {
                    "400": "malformed body",
                    "401": "group token missing or wrong, or unknown group",
                    "409": "the node id is taken (enrolled, or known in another group)",
                    "413": "body too large",
                    "429": "too many enrolments from this address (enrol_rate); the Retry-After header says when to try again",
                },
            ),
            wire.CHECK_PATH: _post(
                "May this host update now, and to what?",
                check,
                decision,
                _AGENT_ERRORS,
                parameters=[_CREDENTIAL_HEADER],
            ),
            wire.REPORTS_PATH: _post(
                "One step of one host's update",
                report,
                schema_of(doc.ReportAccepted),
                {
                    **_AGENT_ERRORS,
                    "409": "replayed, out of order, not following the host's state,"
                    " or the host is in another group",
                },
                parameters=[_CREDENTIAL_HEADER],
            ),
            wire.PRE_REBOOT_PATH: _post(
                "FleetLock: take (or renew) a reboot slot",
                _LOCK_BODY,
                outcome,
                lock_errors,
                _LOCK_ERROR,
                parameters=_LOCK_HEADER,
            ),
            wire.STEADY_STATE_PATH: _post(
                "FleetLock: give the reboot slot back if held",
                _LOCK_BODY,
                outcome,
                _AGENT_ERRORS,
                _LOCK_ERROR,
                parameters=_LOCK_HEADER,
            ),
            wire.SWARM_TOKENS_PATH: _post(
                "A group's first swarm manager posts its join tokens",
                tokens,
                _object({"accepted": {"type": "boolean"}}, ["accepted"]),
                {**_AGENT_ERRORS, "403": "the host's checks have not said it is a swarm manager of the group",
                 "409": "another host posted the group's tokens, or the host is in another group"},
                parameters=[_CREDENTIAL_HEADER],
            ),
            wire.SWARM_JOIN_PATH: _post(
                "A host of the group gets its swarm join tokens",
                enrolment,
                tokens,
                {**_AGENT_ERRORS, "404": "no manager of the group posted tokens yet, or the group is gone"},
                parameters=[_CREDENTIAL_HEADER],
            ),
            release_path: {
                "post": {
                    "summary": "Pause, resume, abort or withdraw a release",
                    "security": _ADMIN,
                    "parameters": [
                        {"name": "image_id", "in": "path", "required": True, "schema": _NAME},
                        {"name": "version", "in": "path", "required": True, "schema": _VERSION},
                        {
                            "name": "action",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "enum": sorted(ADMIN_TRANSITIONS)},
                        },
                    ],
                    "responses": {
                        "200": _json(schema_of(doc.ReleaseStatus), "new state"),
                        **{
                            c: _json(_ERROR, t)
                            for c, t in {
                                "401": "admin token",
                                "403": "admin API off",
                                "404": "no such release in the catalog",
                                "409": "not allowed from the current state",
                            }.items()
                        },
                    },
                }
            },
            "/admin/reload": {
                "post": {
                    "summary": "Re-read fleet.yaml and targets.json now",
                    "security": _ADMIN,
                    "responses": {
                        "200": _json(schema_of(doc.Reloaded), "reloaded"),
                        "400": _json(_ERROR, "bad file, old policies kept"),
                        "401": _json(_ERROR, "admin token"),
                        "403": _json(_ERROR, "admin API off"),
                    },
                }
            },
            "/admin/status": _admin_get(
                "Hosts per state, rollouts, locks, rate used per group", [], schema_of(doc.Status)
            ),
            "/admin/hosts/{node_id}": _admin_get(
                "One host's group, report history and identity events",
                ["node_id"],
                schema_of(doc.HostHistory),
            ),
            "/admin/hosts/{node_id}/move": {
                "post": {
                    "summary": "Move an enrolled host to another group (logged in its events)",
                    "security": _ADMIN,
                    "parameters": [
                        {"name": "node_id", "in": "path", "required": True, "schema": _NAME}
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": _object({"group": _NAME}, ["group"])}
                        },
                    },
                    "responses": {
                        "200": _json(schema_of(doc.HostMoved), "moved"),
                        **{c: _json(_ERROR, t) for c, t in admin_errors.items()},
                    },
                }
            },
            "/admin/hosts/{node_id}/forget": {
                "post": {
                    "summary": "Drop a host's credential so that it may enrol again (logged)",
                    "security": _ADMIN,
                    "parameters": [
                        {"name": "node_id", "in": "path", "required": True, "schema": _NAME}
                    ],
                    "responses": {
                        "200": _json(schema_of(doc.HostForgotten), "forgotten"),
                        **{c: _json(_ERROR, t) for c, t in admin_errors.items()},
                    },
                }
            },
            "/admin/timeline/{version}": _admin_get(
                "Every report about one release, in order", ["version"], schema_of(doc.Timeline)
            ),
            "/admin/locks/{group}": _group_log(
                "A group's reboot-lock log (granted, renewed, released, expired), in order",
                schema_of(doc.LockLog),
                "only events at or after this server time (epoch seconds)",
            ),
            "/admin/updates/{group}": _group_log(
                "The updates a group's rate limit counted, in the order they started",
                schema_of(doc.UpdateLog),
                "only updates started at or after this server time (epoch seconds)",
            ),
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "security": _ADMIN,
                    "responses": {
                        "401": _json(_ERROR, "admin token missing or wrong"),
                        "403": _json(_ERROR, "admin API off"),
                        "200": {
                            "description": "text exposition",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
        },
    }
