"""Joining the group's Docker Swarm with no hand work, on when ``swarm_role`` is set.

The host's declaration (``swarm: {role, labels}``, updater/provision/schema.py) becomes
the settings ``swarm_role``, ``swarm_labels`` and ``swarm_advertise_addr``; after each
step the agent converges the node on them, one docker or fleet call at a time:

- in no swarm, and no manager of the group has posted join tokens to the fleet server
  yet: a manager runs ``docker swarm init`` (a worker waits for one);
- in no swarm, tokens posted: ``docker swarm join`` with the token of its role and the
  address of the manager that posted them (``POST /v1/swarm/join``);
- a manager whose swarm is the group's gives the fleet its tokens when the fleet holds
  none, or holds its own older ones (rotated, or its address changed)
  (``POST /v1/swarm/tokens``); two first managers that raced: the one the fleet
  refused leaves its swarm of one and joins the other's;
- a manager sets its node labels (``berth.group`` and the declared ones).

A converge that cannot go on (docker not up, the fleet unreachable, the node a worker
where a manager was declared) says why in the journal and in ``<state_dir>/swarm.json``
(``berth agent status`` shows it) and the next step tries again: it never holds up the
boot or an update. Once joined it is not redone on this boot unless docker says the node
changed. ``decide`` is the pure core; ``SwarmJoiner`` is the edge.
"""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from updater.agent.hooks import feed_watchdog
from updater.agent.journal import log
from updater.agent.swarm import Run, SwarmError, SwarmInfo, json_lines, parse_info, run_docker
from updater.agent.swarmlabels import label_change
from updater.atomic import atomic_write
from updater.wire import SwarmTokens

STATUS_FILE = "swarm.json"
SWARM_PORT = 2377  # the managers' port (docker swarm init's default --listen-addr)
# Calls one converge makes at most: the longest path, a lost race, takes eleven (ask, init,
# read tokens, post refused, ask, leave, join, read tokens, read labels, label, read labels).
MAX_ACTIONS = 16
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
# What docker 26's client says on stderr when no daemon answers (seen on this machine).
NO_DAEMON = "Cannot connect to the Docker daemon"


class JoinRefused(Exception):
    """The fleet server refused a swarm call (``kind`` as its JSON error names it)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class FleetUnreachable(Exception):
    """The fleet server did not answer a swarm call."""


class SwarmFleet(Protocol):
    """What the joiner asks of the fleet server (updater.agent.boundaries.ServerFleet)."""

    def swarm_tokens(self) -> SwarmTokens | None: ...  # None: no manager posted them yet
    def post_swarm_tokens(self, manager_addr: str, manager_token: str, worker_token: str) -> None: ...


@dataclass(frozen=True)
class Want:
    node_id: str  # this host's name to the fleet
    role: str  # manager or worker
    labels: Mapping[str, str]  # berth.group and the declared ones
    advertise_addr: str = ""
    fleet: bool = True  # a fleet server hands the tokens (standalone: a manager starts its own swarm)


@dataclass(frozen=True)
class Own:
    """A manager's own swarm's join tokens (``docker swarm join-token -q``)."""

    manager_token: str
    worker_token: str


@dataclass(frozen=True)
class Seen:
    """What the converge knows so far; each action adds to it."""

    info: SwarmInfo
    asked: bool = False  # the fleet was asked for the group's tokens
    group: SwarmTokens | None = None  # its answer (None: no manager posted any)
    own: Own | None = None
    labels: Mapping[str, str] | None = None  # the node's labels now
    set_before: frozenset[str] = frozenset()  # labels an earlier converge set
    posted: bool = False
    refused: str = ""  # why the fleet refused this manager's tokens


class Act(enum.StrEnum):
    ASK = "ask"  # POST /v1/swarm/join
    INIT = "init"
    JOIN = "join"
    LEAVE = "leave"
    READ_TOKENS = "read-tokens"
    POST = "post"  # POST /v1/swarm/tokens
    READ_LABELS = "read-labels"
    LABEL = "label"
    DONE = "joined"
    WAIT = "waiting"
    FAIL = "error"


@dataclass(frozen=True)
class Step:
    act: Act
    detail: str = ""
    argv: tuple[str, ...] = ()  # the docker command of init, join, leave, label


def cluster(token: str) -> str:
    """The swarm a join token belongs to: SWMTKN-1-<its CA's digest>-<secret>."""
    parts = token.split("-")
    return parts[2] if len(parts) == 4 else token


def manager_addr(node_addr: str) -> str:
    return f"[{node_addr}]:{SWARM_PORT}" if ":" in node_addr else f"{node_addr}:{SWARM_PORT}"


def _advertise(want: Want) -> tuple[str, ...]:
    return ("--advertise-addr", want.advertise_addr) if want.advertise_addr else ()


def decide(want: Want, seen: Seen) -> Step:
    """The next thing to do to make this node what ``want`` says, from what is ``seen``."""
    info = seen.info
    if info.state == "":
        return Step(Act.WAIT, "the docker daemon does not answer yet")
    if info.state == "pending":
        return Step(Act.WAIT, "joining the swarm (docker: pending)")
    if info.state in ("error", "locked"):
        return Step(Act.FAIL, f"docker's swarm state is {info.state}" + (f": {info.error}" if info.error else "")
                    + ("; unlock it with docker swarm unlock" if info.state == "locked" else ""))
    if info.state == "inactive":
        if want.fleet and not seen.asked:
            return Step(Act.ASK)
        if seen.group is not None:
            token = seen.group.manager_token if want.role == "manager" else seen.group.worker_token
            return Step(Act.JOIN, f"joining the swarm of {seen.group.node_id} at {seen.group.manager_addr}",
                        ("swarm", "join", "--token", token, *_advertise(want), seen.group.manager_addr))
        if want.role == "manager":
            return Step(Act.INIT, "no swarm in the group yet: starting it", ("swarm", "init", *_advertise(want)))
        return Step(Act.WAIT, "no manager of the group has started a swarm yet" if want.fleet
                    else "a worker joins through the fleet server (server_url), and none is set")
    if info.state != "active":
        return Step(Act.FAIL, f"docker's swarm state {info.state!r} is not one this agent knows")
    if info.manager != (want.role == "manager"):
        now = "manager" if info.manager else "worker"
        how = "demote" if info.manager else "promote"
        return Step(Act.FAIL, f"this node is a swarm {now} but declared a {want.role}: "
                              f"docker node {how} {info.node_id} on a manager")
    if not info.manager:
        return Step(Act.DONE, f"worker {info.node_id} (its labels are a manager's to set)")
    return _as_manager(want, seen)


def _as_manager(want: Want, seen: Seen) -> Step:
    info = seen.info
    if seen.own is None:
        return Step(Act.READ_TOKENS)
    if want.fleet and not seen.asked:
        return Step(Act.ASK)
    group, own, addr = seen.group, seen.own, manager_addr(info.node_addr)
    if want.fleet and group is not None and cluster(group.manager_token) != cluster(own.manager_token):
        if seen.refused and info.nodes <= 1:
            # Two first managers raced and the other won: this swarm of one goes, the next
            # converge joins the group's.
            return Step(Act.LEAVE, f"leaving this node's own swarm of one for the group's ({group.node_id})",
                        ("swarm", "leave", "--force"))
        return Step(Act.FAIL, f"this node is in another swarm than the group's (posted by {group.node_id}):"
                              " leave it by hand (docker swarm leave) to join the group's")
    # The fleet holds no tokens, or this host's own older ones (rotated, or a new address).
    stale = group is None or (group.node_id == want.node_id and (
        group.manager_token, group.worker_token, group.manager_addr) != (own.manager_token, own.worker_token, addr))
    if want.fleet and stale and not seen.posted and not seen.refused:
        return Step(Act.POST)
    if seen.labels is None:
        return Step(Act.READ_LABELS)
    change = label_change(seen.labels, want.labels, seen.set_before)
    if not change.empty:
        return Step(Act.LABEL, "setting the node's labels", ("node", "update", *change.arguments(), info.node_id))
    return Step(Act.DONE, f"manager {info.node_id} at {addr}")


def settled(record: Mapping[str, Any], digest: str, boot: str, info: SwarmInfo) -> bool:
    """Whether a converge on this boot already joined, as these settings say, the node
    docker still reports: then nothing needs doing again (docker info is all it costs)."""
    return (record.get("state") == Act.DONE.value and record.get("settings") == digest
            and record.get("boot") == boot and record.get("node_id") == info.node_id
            and info.state == "active")


def parse_labels(text: str) -> dict[str, str]:
    """``docker node inspect <node> --format '{{json .Spec.Labels}}'`` (``null``: none)."""
    if text.strip() == "null":
        return {}
    rows = json_lines(text, "docker node inspect")
    if len(rows) != 1 or not all(isinstance(v, str) for v in rows[0].values()):
        raise SwarmError("docker node inspect: expected one JSON object of label: value")
    return {str(k): str(v) for k, v in rows[0].items()}


# ---- the edge -----------------------------------------------------------------------------


def read_boot_id() -> str:
    return BOOT_ID.read_text().strip() if BOOT_ID.exists() else ""


class SwarmJoiner:
    def __init__(self, want: Want, state_dir: Path, fleet: SwarmFleet | None, run: Run = run_docker,
                 boot_id: Callable[[], str] = read_boot_id, clock: Callable[[], float] = time.time) -> None:
        self.want, self.state_dir, self.fleet, self.run = want, state_dir, fleet, run
        self.boot_id, self.clock = boot_id, clock

    @property
    def status_file(self) -> Path:
        return self.state_dir / STATUS_FILE

    def digest(self) -> str:
        import hashlib  # here, not at the top: the idle service holds no OpenSSL (service.run)

        text = json.dumps([self.want.role, dict(self.want.labels), self.want.advertise_addr], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def converge(self) -> dict[str, Any]:
        """Make the node what the settings say, as far as it goes now; its status document."""
        record = read_status(self.state_dir) or {}
        seen: Seen | None = None
        try:
            seen = Seen(self._info(), set_before=frozenset(record.get("labels_set") or ()))
            if settled(record, self.digest(), self.boot_id(), seen.info):
                return record
            step, seen = self._converge(seen)
        except SwarmError as error:
            step = Step(Act.FAIL, str(error))
        except FleetUnreachable as error:
            step = Step(Act.WAIT, f"fleet server: {error}")
        except JoinRefused as refusal:
            step = (Step(Act.WAIT, f"the fleet server does not know this host as a manager yet (its next check"
                                   f" says so): {refusal}") if refusal.kind == "not_manager"
                    else Step(Act.FAIL, f"the fleet server refused: {refusal}"))
        return self._record(record, step, seen)

    def _info(self) -> SwarmInfo:
        try:
            return parse_info(self.run(["info", "--format", "{{json .Swarm}}"]))
        except SwarmError as error:
            # The client exits 1 with this while dockerd is not up (yet): a wait, not an error.
            if NO_DAEMON in str(error):
                return SwarmInfo("", "", False)
            raise

    def _converge(self, seen: Seen) -> tuple[Step, Seen]:
        for _ in range(MAX_ACTIONS):
            feed_watchdog()
            step = decide(self.want, seen)
            if step.act in (Act.DONE, Act.WAIT, Act.FAIL):
                return step, seen
            seen = self._act(step, seen)
        return Step(Act.FAIL, f"still converging after {MAX_ACTIONS} actions"), seen

    def _act(self, step: Step, seen: Seen) -> Seen:
        if step.detail:
            log("info", f"swarm: {step.detail}")
        match step.act:
            case Act.ASK:
                return replace(seen, asked=True, group=self._fleet().swarm_tokens())
            case Act.READ_TOKENS:
                manager, worker = (self.run(["swarm", "join-token", "-q", role]).strip() for role in ("manager", "worker"))
                return replace(seen, own=Own(manager, worker))
            case Act.POST:
                assert seen.own is not None
                addr = manager_addr(seen.info.node_addr)
                try:
                    self._fleet().post_swarm_tokens(addr, seen.own.manager_token, seen.own.worker_token)
                except JoinRefused as refusal:
                    if refusal.kind != "other_manager":
                        raise
                    return replace(seen, asked=False, refused=str(refusal))  # raced: whose swarm is the group's?
                log("info", f"swarm: gave the group's join tokens to the fleet server ({addr})")
                return replace(seen, posted=True)
            case Act.READ_LABELS:
                text = self.run(["node", "inspect", seen.info.node_id, "--format", "{{json .Spec.Labels}}"])
                return replace(seen, labels=parse_labels(text))
            case Act.LABEL:
                self.run(list(step.argv))
                return replace(seen, labels=None, set_before=frozenset(self.want.labels))
            case _:  # init, join, leave: docker's view of the node changes
                self.run(list(step.argv))
                return replace(seen, info=self._info(), own=None, labels=None)

    def _fleet(self) -> SwarmFleet:
        if self.fleet is None:
            raise SwarmError("no fleet server to ask (server_url)")
        return self.fleet

    def _record(self, before: Mapping[str, Any], step: Step, seen: Seen | None) -> dict[str, Any]:
        labels_set = seen.set_before if seen is not None else frozenset(before.get("labels_set") or ())
        record = {"role": self.want.role, "state": step.act.value, "detail": step.detail,
                  "node_id": seen.info.node_id if seen is not None else "",
                  "settings": self.digest(), "boot": self.boot_id(), "labels_set": sorted(labels_set),
                  "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.clock()))}
        if (before.get("state"), before.get("detail")) != (record["state"], record["detail"]):
            level = {Act.DONE.value: "info", Act.WAIT.value: "warning"}.get(step.act.value, "error")
            log(level, f"swarm {step.act.value}: {step.detail}")
        atomic_write(self.status_file, (json.dumps(record, indent=1, sort_keys=True) + "\n").encode())
        return record


def read_status(state_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((state_dir / STATUS_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None
