"""The rate limit's own record: Store.update_log, `GET /admin/updates/{group}`, `berth fleet updates`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jsonschema
from schemathesis.specs.openapi.converter import to_json_schema_recursive

from updater.fleet.openapi import openapi_schema
from updater.fleet.policy import most_in_flight, most_started_in_any_period
from updater.fleet.settings import parse_settings
from updater.fleet.store import Store
from updater.wire import Report, ReportEvent

TOKEN = "admin-secret"
# Every host in the first wave, and no automatic halt to get in the way.
ALL_AT_ONCE = {"waves": [{"after": "0s", "percent": 100}], "halt": {"min_updates": 100}}


# --- the store, on SQLite and PostgreSQL ---


def test_store_logs_counted_starts_in_start_order_with_their_outcomes(store: Store) -> None:
    groups = parse_settings(
        {"groups": {"default": {"rate": {"max_updates": 2, "period": "100s"}}, "other": {}}},
        Path("."),
    ).groups
    default, other = groups["default"], groups["other"]
    for node in ("b", "a", "c", "x"):
        store.observe(node, "other" if node == "x" else "default", "1.0.0", 0.0)
    assert store.start_update(default, "b", "1.1.0", 50.0, 86400)
    assert store.start_update(default, "a", "1.1.0", 50.0, 86400)  # same instant: by id
    assert not store.start_update(default, "c", "1.1.0", 60.0, 86400)  # full: not counted
    assert store.start_update(other, "x", "1.1.0", 10.0, 86400)
    store.record_report(
        Report("a", "default", 1, ReportEvent.FAILED, "1.1.0", "1.0.0"), default, 70.0
    )
    assert store.start_update(default, "c", "1.1.0", 150.0, 86400)  # b and a left the period
    assert store.update_log("default") == [
        {
            "node_id": "b",
            "version": "1.1.0",
            "started_at": 50.0,
            "finished_at": None,
            "outcome": None,
        },
        {
            "node_id": "a",
            "version": "1.1.0",
            "started_at": 50.0,
            "finished_at": 70.0,
            "outcome": "failed",
        },
        {
            "node_id": "c",
            "version": "1.1.0",
            "started_at": 150.0,
            "finished_at": None,
            "outcome": None,
        },
    ]
    assert [u["node_id"] for u in store.update_log("other")] == ["x"]
    assert [u["node_id"] for u in store.update_log("default", since=50.0)] == ["b", "a", "c"]
    assert [u["node_id"] for u in store.update_log("default", since=50.5)] == ["c"]
    assert store.update_log("nobody") == []


# --- the endpoint, fed by real update checks and reports ---


def test_the_log_shows_what_the_rate_limit_counted(make_fleet: Any) -> None:
    fleet = make_fleet(
        {"prod": {**ALL_AT_ONCE, "rate": {"max_updates": 2, "period": "1h"}, "token": "g"}}
    )
    before = time.time()
    offered = {n: fleet.client(n, "prod", token="g").check("1.0.0") for n in ("a", "b", "c")}
    assert [d.reason for d in offered.values()] == ["offered", "offered", "rate_limited"]
    fleet.finish_update("a", group="prod", token="g")
    fleet.finish_update("b", ReportEvent.ROLLED_BACK, group="prod", token="g")
    # Both finished, but the period still holds their two starts.
    assert fleet.client("c", "prod", token="g").check("1.0.0").reason == "rate_limited"
    fleet.advance(3600)
    assert fleet.client("c", "prod", token="g").check("1.0.0").reason == "offered"

    response = fleet.admin("GET", "/admin/updates/prod")
    assert response.status_code == 200
    body = response.json()
    ok = openapi_schema()["paths"]["/admin/updates/{group}"]["get"]["responses"]["200"]
    schema = ok["content"]["application/json"]["schema"]
    jsonschema.validate(body, to_json_schema_recursive(schema, "nullable"))
    assert set(body) == {"group", "rate", "updates"}
    assert (body["group"], body["rate"]) == ("prod", {"max_updates": 2, "period_s": 3600.0})
    updates = body["updates"]
    assert [(u["node_id"], u["version"], u["outcome"]) for u in updates] == [
        ("a", "1.1.0", "blessed"),
        ("b", "1.1.0", "rolled_back"),
        ("c", "1.1.0", None),
    ]
    a, b, c = updates
    assert before - 1 <= a["started_at"] <= b["started_at"] <= a["finished_at"] <= b["finished_at"]
    assert b["finished_at"] <= time.time() + 1
    assert c["finished_at"] is None and c["started_at"] >= a["started_at"] + 3600
    assert most_started_in_any_period([u["started_at"] for u in updates], 3600) == 2
    assert most_in_flight((u["started_at"], u["finished_at"]) for u in updates) == 2
    since = fleet.admin("GET", f"/admin/updates/prod?since={c['started_at']}").json()
    assert [u["node_id"] for u in since["updates"]] == ["c"]


def test_the_log_needs_the_admin_token_and_a_known_group(make_fleet: Any) -> None:
    fleet = make_fleet({"default": {"token": "grp"}})
    assert fleet.admin("GET", "/admin/updates/default", token=None).status_code == 401
    assert fleet.admin("GET", "/admin/updates/default", token="grp").status_code == 401
    unknown = fleet.admin("GET", "/admin/updates/nope")
    assert (unknown.status_code, unknown.json()) == (404, {"error": "unknown group 'nope'", "kind": "unknown_group"})
    bad = fleet.admin("GET", "/admin/updates/default?since=soon")
    assert bad.status_code == 400 and "since" in bad.json()["error"]
    assert fleet.admin("GET", "/admin/updates/default?since=inf").status_code == 400
    off = make_fleet({"default": {}}, admin_token=None)
    assert off.admin("GET", "/admin/updates/default").status_code == 403


# --- berth fleet updates ---


def test_berth_fleet_updates_prints_the_log_and_the_peaks(make_fleet: Any, berth: Any) -> None:
    fleet = make_fleet({"default": {**ALL_AT_ONCE, "rate": {"max_updates": 3, "period": "2h"}}})
    for node in ("node-a", "b"):
        assert fleet.client(node).check("1.0.0").target_version == "1.1.0"
    fleet.finish_update("node-a")
    assert fleet.client("c").check("1.0.0").target_version == "1.1.0"

    table = berth("fleet", "updates", "default", "--server", fleet.url, "--token", TOKEN)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0] == "updates of group default (at most 3 started per 2h, and in flight)"
    assert lines[1].split() == [
        "started",
        "(UTC)",
        "finished",
        "(UTC)",
        "node",
        "version",
        "outcome",
    ]
    rows = [line.split() for line in lines[2:5]]
    assert [r[2:] for r in rows[1:]] == [
        ["-", "b", "1.1.0", "in_flight"],
        ["-", "c", "1.1.0", "in_flight"],
    ]
    assert rows[0][4:] == ["node-a", "1.1.0", "blessed"]
    assert lines[5] == "most started in any 2h: 3 of 3; most in flight at once: 2 of 3"
    assert len(lines) == 6

    as_json = berth(
        "fleet", "updates", "default", "--server", fleet.url, "--token", TOKEN, "--json"
    )
    assert as_json.returncode == 0, as_json.stderr
    document = json.loads(as_json.stdout)
    assert [u["node_id"] for u in document["updates"]] == ["node-a", "b", "c"]
    assert document["rate"] == {"max_updates": 3, "period_s": 7200.0}
    assert (document["most_started_in_any_period"], document["most_in_flight"]) == (3, 2)
