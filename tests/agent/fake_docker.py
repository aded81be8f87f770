"""A scripted docker CLI for the swarm join tests: what cannot run here is a docker daemon
(the client is installed on this machine, dockerd is not, and a swarm needs several).

It answers the commands updater/agent/swarmjoin.py runs, in the shapes docker 26 prints:
``docker info --format '{{json .Swarm}}'`` as tests/agent/data/swarm/info-*.json (the
no-daemon sample is this machine's real output), ``docker swarm join-token -q`` one
token line, ``docker node inspect --format '{{json .Spec.Labels}}'`` a JSON object or
``null`` (Go's encoding of an empty map), and a manager-only command on a worker fails
with the daemon's own refusal ("This node is not a swarm manager. …"). Several hosts
share one ``Network`` of clusters, so joins, races and labels play out between them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from updater.agent.swarm import SwarmError

NOT_MANAGER = ("Error response from daemon: This node is not a swarm manager. Worker nodes can't be used to"
               " view or modify cluster state. Please run this command on a manager node or promote the"
               " current node to a manager.")
B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def base36(seed: str, length: int) -> str:
    digest = int.from_bytes(hashlib.sha256(seed.encode()).digest(), "big")
    out = []
    for _ in range(length):
        digest, digit = divmod(digest, 36)
        out.append(B36[digit])
    return "".join(out)


@dataclass
class Node:
    node_id: str
    addr: str
    manager: bool
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class Cluster:
    digest: str
    nodes: dict[str, Node] = field(default_factory=dict)
    rotations: int = 0  # `docker swarm join-token --rotate` makes a new secret, same CA digest

    def token(self, role: str) -> str:
        return f"SWMTKN-1-{self.digest}-{base36(f'{self.digest}{role}{self.rotations}', 25)}"


@dataclass
class Network:
    clusters: list[Cluster] = field(default_factory=list)

    def managed_at(self, addr: str) -> Cluster | None:
        return next((c for c in self.clusters if any(n.manager and f"{n.addr}:2377" == addr
                                                        for n in c.nodes.values())), None)


class FakeDocker:
    """One host's docker CLI; ``calls`` logs every command; ``before`` runs a callable
    just before a command (a test's way to interleave another host's converge)."""

    def __init__(self, network: Network, name: str, addr: str, daemon_up: bool = True) -> None:
        self.network, self.name, self.addr, self.daemon_up = network, name, addr, daemon_up
        self.cluster: Cluster | None = None
        self.calls: list[list[str]] = []
        self.before: dict[str, Callable[[], None]] = {}

    @property
    def node(self) -> Node | None:
        return None if self.cluster is None else self.cluster.nodes[f"node-{self.name}"]

    def __call__(self, argv: Sequence[str]) -> str:
        argv = list(argv)
        self.calls.append(argv)
        hook = self.before.pop(" ".join(argv[:2]), None)
        if hook is not None:
            hook()
        if not self.daemon_up:
            # What this machine's client does with no daemon: exit 1, saying so on stderr
            # (`docker info` prints info-no-daemon.json on stdout as well), which
            # run_docker turns into this error.
            raise SwarmError(f"docker {' '.join(argv[:2])}: Cannot connect to the Docker daemon at"
                             " unix:///var/run/docker.sock. Is the docker daemon running?")
        match argv[:2]:
            case ["info", _]:
                return self._info()
            case ["swarm", "init"]:
                self._not_in_swarm()
                self.cluster = Cluster(base36(f"{self.name}-{len(self.network.clusters)}", 50))
                self.network.clusters.append(self.cluster)
                self._enter(manager=True)
                return "Swarm initialized: current node is now a manager.\n"
            case ["swarm", "join"]:
                self._not_in_swarm()
                token, addr = argv[argv.index("--token") + 1], argv[-1]
                cluster = self.network.managed_at(addr)
                if cluster is None or token not in (cluster.token("manager"), cluster.token("worker")):
                    raise SwarmError("docker swarm join: Error response from daemon: invalid join token")
                self.cluster = cluster
                self._enter(manager=token == cluster.token("manager"))
                return "This node joined a swarm.\n"
            case ["swarm", "leave"]:
                assert self.cluster is not None and self.node is not None
                del self.cluster.nodes[self.node.node_id]
                self.cluster = None
                return "Node left the swarm.\n"
            case ["swarm", "join-token"]:
                return self._managing().token(argv[-1]) + "\n"
            case ["node", "inspect"]:
                node = self._managing().nodes[argv[2]]
                return (json.dumps(node.labels) if node.labels else "null") + "\n"
            case ["node", "update"]:
                node = self._managing().nodes[argv[-1]]
                pairs = iter(argv[2:-1])
                for flag, value in zip(pairs, pairs, strict=True):
                    if flag == "--label-add":
                        key, _, text = value.partition("=")
                        node.labels[key] = text
                    elif flag == "--label-rm":
                        node.labels.pop(value)
                return argv[-1] + "\n"
        raise AssertionError(f"the fake docker does not know {argv}")

    def _enter(self, manager: bool) -> None:
        assert self.cluster is not None
        self.cluster.nodes[f"node-{self.name}"] = Node(f"node-{self.name}", self.addr, manager)

    def _not_in_swarm(self) -> None:
        if self.cluster is not None:
            raise SwarmError("docker swarm: Error response from daemon: This node is already part of a swarm.")

    def _managing(self) -> Cluster:
        if self.cluster is None or self.node is None or not self.node.manager:
            raise SwarmError(f"docker: {NOT_MANAGER}")
        return self.cluster

    def _info(self) -> str:
        node = self.node
        if node is None:
            return '{"NodeID":"","NodeAddr":"","LocalNodeState":"inactive","ControlAvailable":false,"Error":"",' \
                   '"RemoteManagers":null}\n'
        assert self.cluster is not None
        managers = [{"NodeID": n.node_id, "Addr": f"{n.addr}:2377"} for n in self.cluster.nodes.values() if n.manager]
        row = {"NodeID": node.node_id, "NodeAddr": node.addr, "LocalNodeState": "active",
               "ControlAvailable": node.manager, "Error": "", "RemoteManagers": managers}
        if node.manager:
            row |= {"Nodes": len(self.cluster.nodes), "Managers": len(managers)}
        return json.dumps(row) + "\n"
