"""Hosts of a group join one swarm with no hand work: each agent's converge
(updater/agent/swarmjoin.py) through its real ServerFleet against a real `berth serve`.
Only docker is scripted (tests/agent/fake_docker.py: no docker daemon runs here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.agent.fake_docker import FakeDocker, Network
from updater.agent.boundaries import ServerFleet
from updater.agent.swarmjoin import JoinRefused, SwarmJoiner, Want
from updater.agent.swarmlabels import GROUP_LABEL, wanted
from updater.version import Version

GROUPS = {"edge": {"token": "s3cret"}, "other": {}}


class Host:
    """One berth host: its agent's fleet boundary, its docker, its joiner."""

    def __init__(self, fleet: Any, tmp_path: Path, network: Network, name: str, role: str,
                 labels: dict[str, str] | None = None, group: str = "edge") -> None:
        state = tmp_path / name
        state.mkdir()
        self.role = role
        self.fleet = ServerFleet(fleet.url, name, group, "s3cret" if group == "edge" else "",
                                 credential_file=state / "host-credential", swarm_role=role)
        self.docker = FakeDocker(network, name, f"10.77.0.{10 + len(list(tmp_path.iterdir()))}")  # m1: .11
        self.joiner = SwarmJoiner(Want(name, role, wanted(group, labels or {})), state, self.fleet,
                                  run=self.docker, boot_id=lambda: "boot-1")

    def check(self) -> None:
        """The agent's update check: it tells the fleet server this host's role."""
        self.fleet.offer(Version.parse("1.0.0"), (), "berth")

    def converge(self) -> dict[str, Any]:
        return self.joiner.converge()


def test_a_group_forms_one_swarm_whatever_order_its_hosts_come_up_in(make_fleet: Any, tmp_path: Path) -> None:
    fleet, network = make_fleet(GROUPS), Network()
    w1 = Host(fleet, tmp_path, network, "w1", "worker")
    m1 = Host(fleet, tmp_path, network, "m1", "manager", {"zone": "a"})
    m2 = Host(fleet, tmp_path, network, "m2", "manager", {"zone": "b"})
    # The worker first: no manager yet, so it waits (and says so).
    w1.check()
    status = w1.converge()
    assert (status["state"], w1.docker.cluster) == ("waiting", None)
    assert "no manager of the group has started a swarm yet" in status["detail"]
    # The first manager before its first check: it starts the swarm, but the fleet will not
    # take its tokens until a check has said it is a manager.
    status = m1.converge()
    assert status["state"] == "waiting" and "does not know this host as a manager yet" in status["detail"]
    m1.check()
    assert m1.converge()["state"] == "joined"
    for host in (m2, w1):
        host.check()
        assert host.converge()["state"] == "joined"
    assert len(network.clusters) == 1
    swarm = network.clusters[0]
    assert {n.node_id: n.manager for n in swarm.nodes.values()} == {
        "node-m1": True, "node-m2": True, "node-w1": False}
    assert swarm.nodes["node-m2"].labels == {"zone": "b", GROUP_LABEL: "edge"}
    assert swarm.nodes["node-m1"].labels == {"zone": "a", GROUP_LABEL: "edge"}
    # A host of another group gets its own group's answer: no swarm there.
    o1 = Host(fleet, tmp_path, network, "o1", "worker", group="other")
    o1.check()
    assert o1.converge()["state"] == "waiting" and o1.docker.cluster is None


def test_two_first_managers_that_race_end_in_one_swarm(make_fleet: Any, tmp_path: Path) -> None:
    fleet, network = make_fleet(GROUPS), Network()
    m1 = Host(fleet, tmp_path, network, "m1", "manager")
    m2 = Host(fleet, tmp_path, network, "m2", "manager")
    for host in (m1, m2):
        host.check()
    # m2 asked the fleet (no swarm yet) and is starting its own when m1 does the same and
    # posts first: m2's tokens are refused, it leaves its swarm of one and joins m1's.
    def m1_comes_up() -> None:
        m1.converge()

    m2.docker.before["swarm init"] = m1_comes_up
    assert m2.converge()["state"] == "joined"
    assert ["swarm", "leave", "--force"] in m2.docker.calls
    assert m1.docker.cluster is m2.docker.cluster
    assert m2.docker.node is not None and m2.docker.node.manager
    tokens = m2.fleet.swarm_tokens()
    assert tokens is not None and tokens.node_id == "m1"


def test_a_later_boot_changes_nothing_and_rotated_tokens_are_posted_again(make_fleet: Any, tmp_path: Path) -> None:
    fleet, network = make_fleet(GROUPS), Network()
    m1 = Host(fleet, tmp_path, network, "m1", "manager")
    m1.check()
    assert m1.converge()["state"] == "joined"
    m1.joiner.boot_id = lambda: "boot-2"
    m1.docker.calls.clear()
    assert m1.converge()["state"] == "joined"
    changing = [c for c in m1.docker.calls if c[:2] in (["swarm", "init"], ["swarm", "join"], ["node", "update"])]
    assert changing == []
    # Tokens rotated on the manager (docker swarm join-token --rotate): posted on the next boot.
    assert m1.docker.cluster is not None
    m1.docker.cluster.rotations += 1
    m1.joiner.boot_id = lambda: "boot-3"
    assert m1.converge()["state"] == "joined"
    posted = m1.fleet.swarm_tokens()
    assert posted is not None and posted.manager_token == m1.docker.cluster.token("manager")


def test_the_fleets_refusals_reach_the_joiner_as_refusals(make_fleet: Any, tmp_path: Path) -> None:
    fleet, network = make_fleet(GROUPS), Network()
    w1 = Host(fleet, tmp_path, network, "w1", "worker")
    w1.check()
    with pytest.raises(JoinRefused) as refused:
        w1.fleet.post_swarm_tokens("10.77.0.11:2377", "SWMTKN-1-" + "a" * 50 + "-" + "b" * 25,
                                   "SWMTKN-1-" + "a" * 50 + "-" + "c" * 25)
    assert refused.value.kind == "not_manager"
    assert w1.fleet.swarm_tokens() is None  # 404 no_swarm: nobody posted yet
