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


def managers(fleet: Any, *names: str) -> list[Any]:
    """Clients of the swarm group whose checks said they are managers (only those may post)."""
    clients = [fleet.client(n, "swarm", token="s3cret") for n in names]
    for client in clients:
        client.check("1.0.0", swarm_role="manager")
    return clients


def test_the_first_manager_posts_and_the_groups_hosts_join(make_fleet: Any) -> None:
    fleet = make_fleet(GROUPS)
    m1, m2 = managers(fleet, "m1", "m2")
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
    (m1,) = managers(fleet, "m1")
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
    managers(fleet, "m1")
    body = {"node_id": "m1", "group": "swarm", "manager_addr": ADDR, "manager_token": MANAGER,
            "worker_token": WORKER, field: value}
    answer = post(fleet, SWARM_TOKENS_PATH, body, {HOST_CREDENTIAL_HEADER: fleet.credentials["m1"]})
    assert answer.status_code == 400 and field in answer.json()["error"]


def test_forgetting_the_manager_drops_the_tokens_it_posted(make_fleet: Any) -> None:
    fleet = make_fleet(GROUPS)
    m1, m2 = managers(fleet, "m1", "m2")
    m1.post_swarm_tokens(ADDR, MANAGER, WORKER)
    assert fleet.admin("POST", "/admin/hosts/m1/forget").status_code == 200
    with pytest.raises(FleetRejected) as gone:
        m2.swarm_join()
    assert gone.value.status == 404
    m2.post_swarm_tokens("10.77.0.12:2377", MANAGER, WORKER)  # now the group's first manager
    assert m2.swarm_join().node_id == "m2"


def test_only_a_manager_of_the_group_posts_tokens(make_fleet: Any) -> None:
    """A worker, a host that never said its role, a host of another group and a host never
    enrolled are refused with a 4xx JSON error, and the group's tokens stay unposted."""
    fleet = make_fleet({**GROUPS, "other": {}})
    worker, silent = (fleet.client(n, "swarm", token="s3cret") for n in ("w1", "s1"))
    worker.check("1.0.0", swarm_role="worker")
    silent.check("1.0.0")
    for client in (worker, silent):
        with pytest.raises(FleetRejected) as refused:
            client.post_swarm_tokens(ADDR, MANAGER, WORKER)
        assert refused.value.status == 403 and refused.value.kind == "not_manager"
    # A manager of another group naming this one: refused by its enrolment.
    elsewhere = fleet.client("o1", "other")
    elsewhere.check("1.0.0", swarm_role="manager")
    body = {"node_id": "o1", "group": "swarm", "manager_addr": ADDR, "manager_token": MANAGER,
            "worker_token": WORKER}
    answer = post(fleet, SWARM_TOKENS_PATH, body, {HOST_CREDENTIAL_HEADER: fleet.credentials["o1"]})
    assert answer.status_code == 409 and answer.json()["kind"] == "wrong_group"
    answer = post(fleet, SWARM_JOIN_PATH, {"node_id": "o1", "group": "swarm"},
                  {HOST_CREDENTIAL_HEADER: fleet.credentials["o1"]})
    assert answer.status_code == 409 and "SWMTKN" not in answer.text
    # A host never enrolled.
    answer = post(fleet, SWARM_TOKENS_PATH, {**body, "node_id": "x9"}, {HOST_CREDENTIAL_HEADER: "guess"})
    assert answer.status_code == 401 and answer.json()["kind"] == "not_enrolled"
    # A worker that becomes a manager (its next check says so) may post.
    worker.check("1.0.0", swarm_role="manager")
    worker.post_swarm_tokens(ADDR, MANAGER, WORKER)
    assert silent.swarm_join().node_id == "w1"
