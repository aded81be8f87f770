"""Joining the group's swarm (updater/agent/swarmjoin.py): the pure decisions, labels,
and the converge on a scripted docker CLI (tests/agent/fake_docker.py; no docker daemon
runs here). The converge against a real fleet server: tests/fleet/test_swarm_join.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.agent.fake_docker import FakeDocker, Network
from updater.agent.swarm import SwarmError, SwarmInfo, parse_info
from updater.agent.swarmjoin import (
    Act,
    Own,
    Seen,
    SwarmJoiner,
    Want,
    cluster,
    decide,
    manager_addr,
    parse_labels,
    read_status,
    settled,
)
from updater.agent.swarmlabels import GROUP_LABEL, label_change, label_problem, wanted
from updater.wire import SwarmTokens

DATA = Path(__file__).parent / "data/swarm"
A = "SWMTKN-1-" + "a" * 50 + "-" + "m" * 25
A_WORKER = "SWMTKN-1-" + "a" * 50 + "-" + "w" * 25
B = "SWMTKN-1-" + "b" * 50 + "-" + "m" * 25
B_WORKER = "SWMTKN-1-" + "b" * 50 + "-" + "w" * 25
MANAGER = Want("m1", "manager", {GROUP_LABEL: "edge", "zone": "a"})
WORKER = Want("w1", "worker", {GROUP_LABEL: "edge"})
INACTIVE = SwarmInfo("", "inactive", False)
ACTIVE_MANAGER = SwarmInfo("n1", "active", True, "10.77.0.11", 1)
ACTIVE_WORKER = SwarmInfo("n2", "active", False, "10.77.0.12")
GROUP_A = SwarmTokens("m1", "edge", "10.77.0.11:2377", A, A_WORKER)
GROUP_B = SwarmTokens("m9", "edge", "10.77.0.19:2377", B, B_WORKER)


@pytest.mark.parametrize("want, seen, act, detail", [
    (MANAGER, Seen(SwarmInfo("", "", False)), Act.WAIT, "docker daemon does not answer"),
    (MANAGER, Seen(SwarmInfo("", "pending", False)), Act.WAIT, "pending"),
    (MANAGER, Seen(SwarmInfo("n1", "error", False, error="rpc error")), Act.FAIL, "error: rpc error"),
    (MANAGER, Seen(SwarmInfo("n1", "locked", False)), Act.FAIL, "docker swarm unlock"),
    # Not in a swarm: ask the fleet first, then start one (manager) or wait (worker) ...
    (MANAGER, Seen(INACTIVE), Act.ASK, ""),
    (MANAGER, Seen(INACTIVE, asked=True), Act.INIT, "starting it"),
    (WORKER, Seen(INACTIVE, asked=True), Act.WAIT, "no manager of the group has started a swarm"),
    # ... or join the group's with the token of its role.
    (MANAGER, Seen(INACTIVE, asked=True, group=GROUP_A), Act.JOIN, "joining the swarm of m1"),
    # A node whose role is not the declared one is not promoted or demoted by the agent.
    (WORKER, Seen(ACTIVE_MANAGER), Act.FAIL, "swarm manager but declared a worker: docker node demote n1"),
    (MANAGER, Seen(ACTIVE_WORKER), Act.FAIL, "swarm worker but declared a manager: docker node promote n2"),
    (WORKER, Seen(ACTIVE_WORKER), Act.DONE, "worker n2"),
    # A manager reads its tokens, asks, posts when the fleet holds none, then labels itself.
    (MANAGER, Seen(ACTIVE_MANAGER), Act.READ_TOKENS, ""),
    (MANAGER, Seen(ACTIVE_MANAGER, own=Own(A, A_WORKER)), Act.ASK, ""),
    (MANAGER, Seen(ACTIVE_MANAGER, own=Own(A, A_WORKER), asked=True), Act.POST, ""),
    (MANAGER, Seen(ACTIVE_MANAGER, own=Own(A, A_WORKER), asked=True, posted=True), Act.READ_LABELS, ""),
    (MANAGER, Seen(ACTIVE_MANAGER, own=Own(A, A_WORKER), asked=True, group=GROUP_A), Act.READ_LABELS, ""),
    (MANAGER, Seen(ACTIVE_MANAGER, own=Own(A, A_WORKER), asked=True, group=GROUP_A, labels={}), Act.LABEL, ""),
    (MANAGER, Seen(ACTIVE_MANAGER, own=Own(A, A_WORKER), asked=True, group=GROUP_A,
                   labels={GROUP_LABEL: "edge", "zone": "a"}), Act.DONE, "manager n1 at 10.77.0.11:2377"),
    # Its own tokens rotated since it posted them: post again.
    (MANAGER, Seen(ACTIVE_MANAGER, own=Own(A, A_WORKER[:-1] + "x"), asked=True, group=GROUP_A), Act.POST, ""),
    # Another manager of the same swarm posted them: nothing to post.
    (Want("m2", "manager", {}), Seen(ACTIVE_MANAGER, own=Own(A, A_WORKER[:-1] + "x"), asked=True,
                                      group=GROUP_A, labels={}), Act.DONE, ""),
    # In another swarm than the group's: a swarm of one it started in a race goes ...
    (MANAGER, Seen(ACTIVE_MANAGER, own=Own(A, A_WORKER), asked=True, group=GROUP_B, refused="409"),
     Act.LEAVE, "leaving this node's own swarm of one"),
    # ... a swarm with other nodes is never left by the agent.
    (MANAGER, Seen(SwarmInfo("n1", "active", True, "10.77.0.11", 3), own=Own(A, A_WORKER), asked=True,
                   group=GROUP_B, refused="409"), Act.FAIL, "another swarm than the group's"),
    (MANAGER, Seen(ACTIVE_MANAGER, own=Own(A, A_WORKER), asked=True, group=GROUP_B), Act.FAIL, "another swarm"),
])
def test_each_situation_has_one_next_step(want: Want, seen: Seen, act: Act, detail: str) -> None:
    step = decide(want, seen)
    assert step.act is act and detail in step.detail


def test_join_and_init_take_the_token_of_the_role_and_the_advertise_address() -> None:
    seen = Seen(INACTIVE, asked=True, group=GROUP_A)
    assert decide(MANAGER, seen).argv == ("swarm", "join", "--token", A, "10.77.0.11:2377")
    assert decide(WORKER, seen).argv == ("swarm", "join", "--token", A_WORKER, "10.77.0.11:2377")
    on_ens4 = Want("m1", "manager", {}, advertise_addr="ens4")
    assert decide(on_ens4, Seen(INACTIVE, asked=True)).argv == ("swarm", "init", "--advertise-addr", "ens4")
    assert decide(on_ens4, seen).argv[-3:] == ("--advertise-addr", "ens4", "10.77.0.11:2377")
    # Standalone (no fleet server): a manager starts its own swarm without asking.
    alone = Want("m1", "manager", {}, fleet=False)
    assert decide(alone, Seen(INACTIVE)).act is Act.INIT
    assert decide(Want("w1", "worker", {}, fleet=False), Seen(INACTIVE)).act is Act.WAIT


def test_tokens_name_their_swarm_and_addresses_take_the_managers_port() -> None:
    assert cluster(A) == cluster(A_WORKER) != cluster(B)
    assert manager_addr("10.77.0.11") == "10.77.0.11:2377"
    assert manager_addr("fd00::11") == "[fd00::11]:2377"
    assert parse_info((DATA / "info-manager.json").read_text()).node_addr == "10.77.0.11"
    assert parse_info((DATA / "info-manager.json").read_text()).nodes == 3


def test_labels_are_the_declared_ones_and_the_group_and_only_berths_are_removed() -> None:
    want = wanted("edge", {"zone": "a"})
    assert want == {"zone": "a", GROUP_LABEL: "edge"}
    change = label_change({"zone": "b", "rack": "7", "old": "x", "berth.stale": "y"}, want, frozenset({"old"}))
    # "rack" was set by hand: it stays; "old" was berth's and is no longer declared.
    assert change.add == ((GROUP_LABEL, "edge"), ("zone", "a"))
    assert change.remove == ("berth.stale", "old")
    assert change.arguments() == ["--label-add", "berth.group=edge", "--label-add", "zone=a",
                                  "--label-rm", "berth.stale", "--label-rm", "old"]
    assert label_change(want, want, frozenset()).empty
    assert label_problem({"zone": "a"}) is None
    assert "prefix" in str(label_problem({"berth.x": "a"}))


def test_node_inspect_labels_are_read_and_null_is_none() -> None:
    assert parse_labels("null\n") == {}
    assert parse_labels('{"zone":"a","berth.group":"edge"}\n') == {"zone": "a", "berth.group": "edge"}
    with pytest.raises(SwarmError, match="docker node inspect"):
        parse_labels('{"zone": 3}\n')


def test_a_joined_node_is_not_converged_again_on_the_same_boot() -> None:
    record = {"state": "joined", "settings": "d1", "boot": "b1", "node_id": "n1"}
    assert settled(record, "d1", "b1", ACTIVE_MANAGER)
    assert not settled(record, "d2", "b1", ACTIVE_MANAGER)  # the declaration changed
    assert not settled(record, "d1", "b2", ACTIVE_MANAGER)  # a new boot
    assert not settled(record, "d1", "b1", SwarmInfo("n7", "active", True))  # another node now
    assert not settled(record, "d1", "b1", INACTIVE)  # left the swarm
    assert not settled({**record, "state": "waiting"}, "d1", "b1", ACTIVE_MANAGER)


def joiner(tmp_path: Path, docker: FakeDocker, want: Want, boot: list[str]) -> SwarmJoiner:
    return SwarmJoiner(want, tmp_path / docker.name, None, run=docker, boot_id=lambda: boot[0], clock=lambda: 0.0)


def test_a_standalone_manager_starts_its_swarm_labels_itself_and_stays_put(tmp_path: Path) -> None:
    docker, boot = FakeDocker(Network(), "m1", "10.77.0.11"), ["boot-1"]
    want = Want("m1", "manager", wanted("edge", {"zone": "a"}), fleet=False)
    (tmp_path / "m1").mkdir()
    status = joiner(tmp_path, docker, want, boot).converge()
    assert (status["state"], status["node_id"]) == ("joined", "node-m1")
    assert docker.node is not None and docker.node.labels == {"zone": "a", GROUP_LABEL: "edge"}
    assert read_status(tmp_path / "m1") == status
    # The next step on this boot: docker info, nothing else.
    docker.calls.clear()
    joiner(tmp_path, docker, want, boot).converge()
    assert docker.calls == [["info", "--format", "{{json .Swarm}}"]]
    # The next boot, with a label no longer declared: checked again, that label removed.
    boot[0], docker.node.labels["rack"] = "boot-2", "7"
    fewer = Want("m1", "manager", wanted("edge", {}), fleet=False)
    assert joiner(tmp_path, docker, fewer, boot).converge()["state"] == "joined"
    assert docker.node.labels == {GROUP_LABEL: "edge", "rack": "7"}  # rack was set by hand
    assert not any(call[:2] in (["swarm", "init"], ["swarm", "join"]) for call in docker.calls)


def test_what_stops_a_converge_is_recorded_and_tried_again(tmp_path: Path) -> None:
    network = Network()
    docker = FakeDocker(network, "m1", "10.77.0.11", daemon_up=False)
    want = Want("m1", "manager", {}, fleet=False)
    (tmp_path / "m1").mkdir()
    status = joiner(tmp_path, docker, want, ["b"]).converge()
    assert (status["state"], status["detail"]) == ("waiting", "the docker daemon does not answer yet")
    docker.daemon_up = True
    assert joiner(tmp_path, docker, want, ["b"]).converge()["state"] == "joined"
    # Declared a worker now, but the node is a manager: said, and nothing is changed.
    status = joiner(tmp_path, docker, Want("m1", "worker", {}, fleet=False), ["b"]).converge()
    assert status["state"] == "error" and "docker node demote node-m1" in status["detail"]
    assert docker.node is not None and docker.node.manager
