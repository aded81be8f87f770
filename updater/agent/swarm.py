"""The Docker Swarm drain, a built-in reboot hook (updater/agent/hooks.py), on when the
setting ``swarm_drain`` is.

Before the reboot: ``docker node update --availability drain <self>``, then wait,
within the stage's budget, until no task of a replicated service is still live on
this node and every replicated service runs all its replicas again (on the other
nodes): its tasks run elsewhere. A task no other node can take (pending, "no suitable
node": e.g. ``--replicas-max-per-node 1`` with every other node holding one) is not
waited for: it waits for this node. After the bless: ``--availability active``, then
wait, within the budget, until every replicated service runs all its replicas again:
only then is the host back in service and its lock given back. Swarm never moves a
task back by itself, so without that wait the next host's drain could begin while
this node's share had not started yet.
`docker node update` and `docker service ls` answer only on a manager; on a worker
the drain fails, so the reboot waits (a worker is drained from a manager, e.g. by a
pre-reboot hook with a manager's DOCKER_HOST).

Reading ``docker … --format '{{json .}}'`` output (one JSON object a line, what
``--format json`` prints on docker 24 and later) and judging it
is pure; ``run_docker`` is the thin edge that runs the commands.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from updater.agent.hooks import Builtins, HookResult, feed_watchdog

DRAIN_HOOK, ACTIVE_HOOK = "builtin:swarm-drain", "builtin:swarm-active"
POLL_S = 2.0
# Task states in which a task holds (or is about to hold) a container on its node
# (swarmkit's api.TaskState, as `docker node ps` spells them).
LIVE_STATES = frozenset({"new", "pending", "assigned", "accepted", "preparing", "ready", "starting", "running"})


class SwarmError(RuntimeError):
    """Docker said no, or said something this module cannot read."""


def json_lines(text: str, what: str) -> list[dict[str, Any]]:
    """``docker … --format '{{json .}}'`` output: one object per line (blank lines skipped)."""
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise SwarmError(f"{what}: line {number} is not JSON: {line[:80]!r}") from None
        if not isinstance(row, dict):
            raise SwarmError(f"{what}: line {number} is not a JSON object")
        rows.append(row)
    return rows


@dataclass(frozen=True)
class SwarmInfo:
    node_id: str
    state: str  # LocalNodeState: active, inactive, pending, error, locked
    manager: bool  # ControlAvailable
    node_addr: str = ""  # the address the swarm reaches this node at (its advertise address)
    nodes: int = 0  # the swarm's nodes (a manager knows; a worker reads 0)
    error: str = ""  # why the state is "error"


def parse_info(text: str) -> SwarmInfo:
    """``docker info --format '{{json .Swarm}}'``."""
    rows = json_lines(text, "docker info")
    if len(rows) != 1:
        raise SwarmError("docker info: expected one JSON object")
    row = rows[0]
    nodes = row.get("Nodes")
    return SwarmInfo(str(row.get("NodeID") or ""), str(row.get("LocalNodeState") or ""),
                     bool(row.get("ControlAvailable")), str(row.get("NodeAddr") or ""),
                     nodes if isinstance(nodes, int) else 0, str(row.get("Error") or ""))


@dataclass(frozen=True)
class Task:
    name: str  # <service>.<slot> (replicated) or <service>.<node id> (global)
    desired: str
    current: str  # first word of CurrentState ("Running 2 minutes ago" -> "running")

    @property
    def service(self) -> str:
        return self.name.rsplit(".", 1)[0]

    @property
    def live(self) -> bool:
        return self.current in LIVE_STATES


def parse_tasks(text: str) -> list[Task]:
    """``docker node ps <node> --format '{{json .}}'``; a task's history rows start with "\\_ "."""
    tasks = []
    for row in json_lines(text, "docker node ps"):
        name = str(row.get("Name") or "").removeprefix("\\_").strip()
        current = str(row.get("CurrentState") or "").split(" ", 1)[0].lower()
        tasks.append(Task(name, str(row.get("DesiredState") or "").lower(), current))
    return tasks


@dataclass(frozen=True)
class Service:
    name: str
    mode: str  # replicated, global, replicated-job, global-job
    running: int
    desired: int


_REPLICAS = re.compile(r"(\d+)/(\d+)")


def parse_services(text: str) -> list[Service]:
    """``docker service ls --format '{{json .}}'``; Replicas reads "2/3" (maybe "2/3 (max 1 per node)")."""
    services = []
    for row in json_lines(text, "docker service ls"):
        match = _REPLICAS.match(str(row.get("Replicas") or ""))
        running, desired = (int(match[1]), int(match[2])) if match else (0, 0)
        services.append(Service(str(row.get("Name") or ""), str(row.get("Mode") or ""), running, desired))
    return services


# What swarmkit's scheduler records on a task that no node can take (constraints,
# resources, max replicas per node); the task stays pending until one can.
NO_SUITABLE_NODE = "no suitable node"


def unplaceable(text: str) -> Counter[str]:
    """Per service, its tasks no node can take, from ``docker service ps --no-trunc
    --format '{{json .}}' <services>`` (docker prints the error in double quotes)."""
    stuck: Counter[str] = Counter()
    for row in json_lines(text, "docker service ps"):
        name = str(row.get("Name") or "").removeprefix("\\_").strip()
        pending = str(row.get("CurrentState") or "").lower().startswith("pending")
        if pending and str(row.get("Error") or "").strip('"').startswith(NO_SUITABLE_NODE):
            stuck[name.rsplit(".", 1)[0]] += 1
    return stuck


def short_services(services: Sequence[Service], stuck: Mapping[str, int] | None = None) -> list[str]:
    """The replicated services running fewer replicas than they should, not counting
    the ``stuck`` tasks (per service) no node can take: "web 2/3"."""
    stuck = stuck or {}
    return sorted(f"{s.name} {s.running}/{s.desired}" for s in services
                  if s.mode == "replicated" and s.running + stuck.get(s.name, 0) < s.desired)


def live_here(tasks: Sequence[Task], services: Sequence[Service]) -> list[str]:
    """This node's tasks of replicated services that still hold (or will hold) a container."""
    replicated = {s.name for s in services if s.mode == "replicated"}
    return sorted({t.name for t in tasks if t.live and t.service in replicated})


def still_here(tasks: Sequence[Task], services: Sequence[Service],
               stuck: Mapping[str, int] | None = None) -> str | None:
    """What keeps the drain waiting, or None once this node runs no replicated task and
    every replicated service is back to all its replicas (elsewhere), but for the
    ``stuck`` tasks no node can take."""
    if live := live_here(tasks, services):
        return f"tasks still on this node: {', '.join(live)}"
    if short := short_services(services, stuck):
        return f"services not yet back to all their replicas: {', '.join(short)}"
    return None


Run = Callable[[Sequence[str]], str]


def fed_sleep(seconds: float) -> None:
    feed_watchdog()
    time.sleep(seconds)


def run_docker(argv: Sequence[str]) -> str:
    """The edge: one docker command's stdout; SwarmError with its stderr when it fails."""
    try:
        done = subprocess.run(["docker", *argv], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SwarmError(f"docker {argv[0]}: {error}") from None
    if done.returncode != 0:
        raise SwarmError(f"docker {' '.join(argv[:2])}: {done.stderr.strip()[-300:] or done.returncode}")
    return done.stdout


class SwarmNode:
    """This host's swarm node, through the docker CLI (``run``: the edge above)."""

    def __init__(self, run: Run = run_docker, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = fed_sleep) -> None:
        self.run, self.clock, self.sleep = run, clock, sleep

    def _self(self) -> str:
        info = parse_info(self.run(["info", "--format", "{{json .Swarm}}"]))
        if info.state != "active" or not info.node_id:
            raise SwarmError(f"this host is not in a swarm (state {info.state or 'unknown'})")
        if not info.manager:
            raise SwarmError("this node is a swarm worker: only a manager can drain it")
        return info.node_id

    def drain(self, left_s: float) -> HookResult:
        deadline = self.clock() + left_s
        try:
            node = self._self()
            self.run(["node", "update", "--availability", "drain", node])
            while True:
                tasks = parse_tasks(self.run(["node", "ps", node, "--format", "{{json .}}"]))
                services = self._services()
                # Only short services left: are their missing tasks ones no node can take?
                stuck = (self._stuck(services) if short_services(services) and not live_here(tasks, services)
                         else None)
                why = still_here(tasks, services, stuck)
                if why is None:
                    return HookResult(DRAIN_HOOK, 0, f"node {node} drained")
                if self.clock() + POLL_S > deadline:
                    return HookResult(DRAIN_HOOK, None, why)
                self.sleep(POLL_S)
        except SwarmError as error:
            return HookResult(DRAIN_HOOK, 1, str(error))

    def _services(self) -> list[Service]:
        return parse_services(self.run(["service", "ls", "--format", "{{json .}}"]))

    def _stuck(self, services: Sequence[Service]) -> Counter[str]:
        names = [s.name for s in services if s.mode == "replicated" and s.running < s.desired]
        return unplaceable(self.run(["service", "ps", "--no-trunc", "--format", "{{json .}}", *names]))

    def activate(self, left_s: float) -> HookResult:
        deadline = self.clock() + left_s
        try:
            node = self._self()
            self.run(["node", "update", "--availability", "active", node])
            while short := short_services(self._services()):
                if self.clock() + POLL_S > deadline:
                    return HookResult(ACTIVE_HOOK, None, f"node {node} active; services not yet back "
                                      f"to all their replicas: {', '.join(short)}")
                self.sleep(POLL_S)
        except SwarmError as error:
            return HookResult(ACTIVE_HOOK, 1, str(error))
        return HookResult(ACTIVE_HOOK, 0, f"node {node} active")


def swarm_builtins(enabled: bool, node: SwarmNode | None = None) -> Builtins:
    """The built-in hooks the setting ``swarm_drain`` turns on."""
    if not enabled:
        return Builtins()
    node = node or SwarmNode()
    return Builtins(pre_reboot=(node.drain,), post_bless=(node.activate,))
