"""Swarm join tokens through the fleet server: the group's first manager posts them over
its host credential, the group's other hosts fetch them over theirs, nobody else sees
them, and no admin document shows them (a real `berth serve`)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from updater.client import FleetRejected
from updater.wire import HOST_CREDENTIAL_HEADER, SWARM_JOIN_PATH, SWARM_TOKENS_PATH

GROUPS = {"default": {}, "swarm": {"token": "s3cret"}}
MANAGER = "SWMTKN-1-3pu6hszjas19xyp7ghgosyx9k8atbfcr8p2is99znpy26u2lkl-7p73s1dx5in4tatdymyhg9hu2"
WORKER = "SWMTKN-1-3pu6hszjas19xyp7ghgosyx9k8atbfcr8p2is99znpy26u2lkl-1awxwuwd3z9j1z3puu7rcgdbx"
ADDR = "10.77.0.11:2377"


def post(fleet: Any, path: str, body: Any, headers: dict[str, str] | None = None) -> requests.Response:
    return requests.post(fleet.url + path, json=body, headers=headers or {}, timeout=30)


def test_the_first_manager_posts_and_the_groups_hosts_join(make_fleet: Any) -> None:
    fleet = make_fleet(GROUPS)
    m1, m2 = (fleet.client(n, "swarm", token="s3cret") for n in ("m1", "m2"))
    other = fleet.client("w9", "default")
    with pytest.raises(FleetRejected) as none_yet:
        m2.swarm_join()
    assert none_yet.value.status == 404 and none_yet.value.kind == "no_swarm"
    m1.post_swarm_tokens(ADDR, MANAGER, WORKER)
    tokens = m2.swarm_join()
    assert (tokens.node_id, tokens.manager_addr, tokens.manager_token, tokens.worker_token) == (
        "m1", ADDR, MANAGER, WORKER)
    with pytest.raises(FleetRejected) as elsewhere:  # another group's host: that group's tokens
        other.swarm_join()
    assert elsewhere.value.status == 404
    # Another host of the group may not replace them; the first manager may (rotated tokens).
    with pytest.raises(FleetRejected) as second:
        m2.post_swarm_tokens("10.77.0.12:2377", MANAGER, WORKER)
    assert second.value.status == 409 and second.value.kind == "other_manager"
    rotated = WORKER[:-3] + "abc"
    m1.post_swarm_tokens(ADDR, MANAGER, rotated)
    assert m2.swarm_join().worker_token == rotated
    # No admin document shows a token.
    shown = json.dumps([fleet.status(), fleet.admin("GET", "/admin/hosts/m1").json(),
                        fleet.admin("GET", "/admin/locks/swarm").json(),
                        fleet.admin("GET", "/admin/updates/swarm").json()])
    assert "SWMTKN" not in shown


def test_no_one_posts_or_fetches_tokens_without_a_host_credential(make_fleet: Any) -> None:
    fleet = make_fleet(GROUPS)
    m1 = fleet.client("m1", "swarm", token="s3cret")
    m1.post_swarm_tokens(ADDR, MANAGER, WORKER)
    body = {"node_id": "m1", "group": "swarm"}
    posted = {**body, "manager_addr": "10.6.6.6:2377", "manager_token": MANAGER, "worker_token": WORKER}
    for headers in ({}, {HOST_CREDENTIAL_HEADER: "guess"}, {"Authorization": "Bearer s3cret"}):
        assert post(fleet, SWARM_JOIN_PATH, body, headers).status_code == 401
        assert post(fleet, SWARM_TOKENS_PATH, posted, headers).status_code == 401
    # A node never enrolled is not let in on the group's token.
    stranger = {"node_id": "x1", "group": "swarm"}
    answer = post(fleet, SWARM_JOIN_PATH, stranger, {"Authorization": "Bearer s3cret"})
    assert answer.status_code == 401 and "SWMTKN" not in answer.text
    assert fleet.client("m2", "swarm", token="s3cret").swarm_join().manager_addr == ADDR  # unchanged


@pytest.mark.parametrize("field, value", [
    ("manager_token", "SWMTKN-2-abc-def"), ("worker_token", "not a token"), ("manager_token", 7),
    ("manager_addr", "10.0.0.1"), ("manager_addr", "a b:1"), ("colour", "blue"),
])
def test_malformed_tokens_are_refused_with_a_reason(make_fleet: Any, field: str, value: Any) -> None:
    fleet = make_fleet(GROUPS)
    fleet.client("m1", "swarm", token="s3cret").check("1.0.0")
    body = {"node_id": "m1", "group": "swarm", "manager_addr": ADDR, "manager_token": MANAGER,
            "worker_token": WORKER, field: value}
    answer = post(fleet, SWARM_TOKENS_PATH, body, {HOST_CREDENTIAL_HEADER: fleet.credentials["m1"]})
    assert answer.status_code == 400 and field in answer.json()["error"]


def test_forgetting_the_manager_drops_the_tokens_it_posted(make_fleet: Any) -> None:
    fleet = make_fleet(GROUPS)
    m1, m2 = (fleet.client(n, "swarm", token="s3cret") for n in ("m1", "m2"))
    m1.post_swarm_tokens(ADDR, MANAGER, WORKER)
    assert fleet.admin("POST", "/admin/hosts/m1/forget").status_code == 200
    with pytest.raises(FleetRejected) as gone:
        m2.swarm_join()
    assert gone.value.status == 404
    m2.post_swarm_tokens("10.77.0.12:2377", MANAGER, WORKER)  # now the group's first manager
    assert m2.swarm_join().node_id == "m2"
