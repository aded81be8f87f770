"""`GET /admin/locks/{group}` and `berth fleet locks` against a real server, fed by real FleetLock calls."""

from __future__ import annotations

import json
import time
from typing import Any

import jsonschema
import requests

from updater.fleet.openapi import openapi_schema

HEADER = {"fleet-lock-protocol": "true"}
TOKEN = "admin-secret"


def fleetlock(fleet: Any, path: str, node: str, group: str, token: str) -> None:
    response = requests.post(
        fleet.url + path,
        json={"client_params": {"id": node, "group": group}},
        headers={**HEADER, "Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text


def test_the_log_shows_grants_and_releases_through_fleetlock(make_fleet: Any) -> None:
    # A group with its own token: the admin token, not the group's, opens its log.
    fleet = make_fleet({"prod": {"max_concurrent_reboots": 2, "token": "grp"}})
    before = time.time()
    fleetlock(fleet, "/v1/pre-reboot", "a", "prod", "grp")
    fleetlock(fleet, "/v1/pre-reboot", "b", "prod", "grp")
    fleetlock(fleet, "/v1/steady-state", "a", "prod", "grp")
    fleetlock(fleet, "/v1/steady-state", "a", "prod", "grp")  # holds nothing: not logged
    response = fleet.admin("GET", "/admin/locks/prod")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"group", "max_concurrent_reboots", "events"}
    assert (body["group"], body["max_concurrent_reboots"]) == ("prod", 2)
    assert [(e["node_id"], e["event"]) for e in body["events"]] == [
        ("a", "granted"),
        ("b", "granted"),
        ("a", "released"),
    ]
    ok = openapi_schema()["paths"]["/admin/locks/{group}"]["get"]["responses"]["200"]
    jsonschema.validate(body, ok["content"]["application/json"]["schema"])
    times = [e["at"] for e in body["events"]]
    assert before - 1 <= times[0] <= times[1] <= times[2] <= time.time() + 1
    since = fleet.admin("GET", f"/admin/locks/prod?since={times[2]}").json()["events"]
    assert [(e["node_id"], e["event"]) for e in since] == [("a", "released")]


def test_an_expired_lease_appears_in_the_log_when_its_slot_is_taken(make_fleet: Any) -> None:
    fleet = make_fleet({"default": {"lock_ttl": "10m"}})
    fleet.client("a").pre_reboot()
    fleet.advance(601)
    fleet.client("b").pre_reboot()
    events = fleet.admin("GET", "/admin/locks/default").json()["events"]
    assert [(e["node_id"], e["event"]) for e in events] == [
        ("a", "granted"),
        ("a", "expired"),
        ("b", "granted"),
    ]
    assert events[1]["at"] == events[2]["at"] >= events[0]["at"] + 601


def test_the_log_needs_the_admin_token_and_a_known_group(make_fleet: Any) -> None:
    fleet = make_fleet({"default": {"token": "grp"}})
    assert fleet.admin("GET", "/admin/locks/default", token=None).status_code == 401
    assert fleet.admin("GET", "/admin/locks/default", token="grp").status_code == 401
    unknown = fleet.admin("GET", "/admin/locks/nope")
    assert (unknown.status_code, unknown.json()) == (404, {"error": "unknown group 'nope'", "kind": "unknown_group"})
    bad = fleet.admin("GET", "/admin/locks/default?since=soon")
    assert bad.status_code == 400 and "since" in bad.json()["error"]
    assert fleet.admin("GET", "/admin/locks/default?since=nan").status_code == 400


def test_the_log_is_off_with_the_admin_api(make_fleet: Any) -> None:
    fleet = make_fleet({"default": {}}, admin_token=None)
    assert fleet.admin("GET", "/admin/locks/default").status_code == 403


def test_berth_fleet_locks_prints_the_log_and_the_peak(make_fleet: Any, berth: Any) -> None:
    fleet = make_fleet({"default": {"max_concurrent_reboots": 2}})
    for node in ("node-a", "b"):
        fleet.client(node).pre_reboot()
    fleet.client("node-a").steady_state()
    fleet.client("c").pre_reboot()

    table = berth("fleet", "locks", "default", "--server", fleet.url, "--token", TOKEN)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0] == "reboot locks of group default (at most 2 at once)"
    assert lines[1].split() == ["time", "(UTC)", "node", "event"]
    assert [line.split()[2:] for line in lines[2:6]] == [
        ["node-a", "granted"],
        ["b", "granted"],
        ["node-a", "released"],
        ["c", "granted"],
    ]
    assert lines[6].startswith("most held at once: 2 of 2 (node-a, b) at ")
    assert len(lines) == 7

    as_json = berth("fleet", "locks", "default", "--server", fleet.url, "--token", TOKEN, "--json")
    assert as_json.returncode == 0, as_json.stderr
    document = json.loads(as_json.stdout)
    assert len(document["events"]) == 4
    assert document["most_held"]["count"] == 2
    assert document["most_held"]["holders"] == ["node-a", "b"]
    assert document["most_held"]["at"] == document["events"][1]["at"]
