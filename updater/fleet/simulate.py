"""`berth fleet simulate`: N simulated hosts against a real `berth serve`, time compressed.

The simulator starts `berth serve --test-clock` on 127.0.0.1 (its own
temporary repository and database) and moves the server's clock forward one
tick at a time through the admin API: the server keeps its real clock plus an
offset stored in the database, so every worker process sees the same time and
policy code runs unchanged. Each host speaks through updater.client (the code
the agent uses): it polls, downloads (simulated), reports, takes the reboot
lock, "reboots" over one tick, then blesses or rolls back (injected failure
share) and gives the lock back. After every tick the invariants are checked;
a violation ends the run with a non-zero exit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import secrets
import sys
import tempfile
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from cli.errors import UserError
from updater.client import FleetClient, LockDenied
from updater.fleet.documents import Status
from updater.fleet.launch import running_server, write_config
from updater.fleet.settings import FleetSettings, SettingsError, load_settings, parse_duration
from updater.fleet.synthetic import synthetic_release, write_targets
from updater.transport import Transport
from updater.wire import Report, ReportEvent

BASE_VERSION = "1.0.0"
THREADS = 8


@dataclass
class Host:
    node_id: str
    group: str
    version: str = BASE_VERSION
    phase: str = "idle"  # idle | waiting_lock | rebooting
    target: str | None = None
    seq: int = 0
    bad: set[str] = field(default_factory=set)
    next_poll: float = 0.0
    credential: str | None = None  # from its enrolment, as an agent keeps it on /var


@dataclass
class Plan:
    hosts: int
    releases: list[str]
    fail: dict[tuple[str, str | None], float]  # (version, group or None) -> share
    split: dict[str, int]
    poll_s: float
    tick_s: float
    max_time_s: float
    seed: int


@dataclass
class Ledger:
    """What the simulator saw, to check the invariants against the policy."""

    settings: FleetSettings
    holders: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    starts: dict[str, deque[float]] = field(default_factory=lambda: defaultdict(deque))
    in_flight: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    violations: list[str] = field(default_factory=list)
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def took_lock(self, host: Host) -> None:
        with self.lock:
            held = self.holders[host.group]
            held.add(host.node_id)
            limit = self.settings.groups[host.group].max_concurrent_reboots
            if len(held) > limit:
                self.violations.append(
                    f"{host.group}: {len(held)} reboot locks held, limit {limit}"
                )

    def gave_lock(self, host: Host) -> None:
        with self.lock:
            self.holders[host.group].discard(host.node_id)

    def started(self, host: Host, now: float) -> None:
        rate = self.settings.groups[host.group].rate
        with self.lock:
            starts = self.starts[host.group]
            starts.append(now)
            while starts and starts[0] <= now - rate.period_s:
                starts.popleft()
            self.in_flight[host.group] += 1
            if len(starts) > rate.max_updates or self.in_flight[host.group] > rate.max_updates:
                self.violations.append(
                    f"{host.group}: {len(starts)} started / {self.in_flight[host.group]}"
                    f" in flight within {rate.period_s:g}s, limit {rate.max_updates}"
                )

    def finished(self, host: Host) -> None:
        with self.lock:
            self.in_flight[host.group] -= 1

    def sent(self, count: int = 1) -> None:
        with self.lock:
            self.requests += count


class Simulation:
    def __init__(self, plan: Plan, server: str, token: str, settings: FleetSettings) -> None:
        self.plan, self.server, self.token = plan, server, token
        self.ledger = Ledger(settings)
        self.local = threading.local()
        self.now = 0.0
        self.halted_seen: set[tuple[str, str]] = set()
        rng = random.Random(plan.seed)
        self.hosts = [
            Host(f"sim-{group}-{i:06d}", group, next_poll=rng.uniform(0, plan.poll_s))
            for group, count in plan.split.items()
            for i in range(count)
        ]
        self.failing = {
            (h.node_id, version)
            for (version, group), share in plan.fail.items()
            for h in self.hosts
            if (group is None or h.group == group)
            and random.Random(f"{plan.seed}{h.node_id}").random() < share
        }

    def _client(self, host: Host) -> FleetClient:
        transport = getattr(self.local, "transport", None)
        if transport is None:
            transport = self.local.transport = Transport(self.server)
        token = self.ledger.settings.groups[host.group].token
        def keep(credential: str) -> None:
            host.credential = credential

        return FleetClient(
            self.server,
            host.node_id,
            host.group,
            token=token,
            credential=host.credential,
            on_enrol=keep,
            transport=transport,
        )

    def _admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = requests.request(
            method,
            self.server + path,
            json=body,
            timeout=30,
            headers={"Authorization": f"Bearer {self.token}"},
        )
        response.raise_for_status()
        return response.json()

    def _report(self, client: FleetClient, host: Host, event: ReportEvent, version: str) -> None:
        host.seq += 1
        client.report(Report(host.node_id, host.group, host.seq, event, version, host.version))
        self.ledger.sent()

    def _step(self, host: Host) -> None:
        client = self._client(host)
        if host.phase == "rebooting":
            assert host.target is not None
            failed = (host.node_id, host.target) in self.failing
            self._report(
                client,
                host,
                ReportEvent.ROLLED_BACK if failed else ReportEvent.BLESSED,
                host.target,
            )
            if failed:
                host.bad.add(host.target)
            else:
                host.version = host.target
            self.ledger.gave_lock(host)
            client.steady_state()
            self.ledger.finished(host)
            host.phase, host.target = "idle", None
            self.ledger.sent()
            return
        if host.phase == "idle":
            host.next_poll = self.now + self.plan.poll_s
            decision = client.check(host.version, bad_versions=sorted(host.bad))
            self.ledger.sent()
            if decision.target_version is None:
                return
            if decision.target_version in host.bad:
                self.ledger.violations.append(
                    f"{host.node_id} offered {decision.target_version} it rolled back"
                )
            if (host.group, decision.target_version) in self.halted_seen:
                self.ledger.violations.append(
                    f"{host.node_id} offered halted {decision.target_version}"
                )
            host.target = decision.target_version
            self.ledger.started(host, self.now)
            self._report(client, host, ReportEvent.DOWNLOADING, host.target)
            self._report(client, host, ReportEvent.STAGED, host.target)
            host.phase = "waiting_lock"
        try:
            client.pre_reboot()
        except LockDenied:
            return
        finally:
            self.ledger.sent()
        self.ledger.took_lock(host)
        assert host.target is not None
        self._report(client, host, ReportEvent.REBOOTING, host.target)
        host.phase = "rebooting"

    def _due(self) -> list[Host]:
        return [h for h in self.hosts if h.phase != "idle" or h.next_poll <= self.now]

    def _settled(self, version: str, status: Status) -> bool:
        if any(h.phase != "idle" for h in self.hosts):
            return False
        if all(h.version == version or version in h.bad for h in self.hosts):
            return True
        halted = {
            g
            for g, info in status.groups.items()
            for r in info.rollouts
            if r.version == version and r.halted_reason
        }
        self.halted_seen |= {(g, version) for g in halted}
        # Groups that wait (directly or not) on a halted group can never start it either.
        waiting = {g for g, p in self.ledger.settings.groups.items() if self._waits_on(g, halted)}
        return all(
            h.version == version or version in h.bad or h.group in halted | waiting
            for h in self.hosts
        )

    def _waits_on(self, group: str, halted: set[str]) -> bool:
        after = self.ledger.settings.groups[group].after
        while after is not None:
            if after in halted:
                return True
            after = self.ledger.settings.groups[after].after
        return False

    def run(self, repository: Path, progress: bool) -> dict[str, Any]:
        started_wall = time.monotonic()
        summary: dict[str, Any] = {"hosts": len(self.hosts), "releases": {}}
        published: list[str] = [BASE_VERSION]
        self.now = start = self._admin("POST", "/admin/clock", {"advance_s": 0})["now"]
        for host in self.hosts:
            host.next_poll += start
        with ThreadPoolExecutor(THREADS) as pool:
            for version in self.plan.releases:
                published.append(version)
                write_targets(repository, [synthetic_release(v) for v in published])
                self._admin("POST", "/admin/reload")
                began = self.now
                while True:
                    list(pool.map(self._step, self._due()))
                    status = Status.from_json(self._admin("GET", "/admin/status"))
                    if self.ledger.violations or self._settled(version, status):
                        break
                    if self.now - start > self.plan.max_time_s:
                        self.ledger.violations.append(
                            f"{version}: not settled after {self.plan.max_time_s:g}s"
                        )
                        break
                    self.now = self._admin("POST", "/admin/clock", {"advance_s": self.plan.tick_s})[
                        "now"
                    ]
                    if progress:
                        on = sum(h.version == version for h in self.hosts)
                        print(
                            f"\r  {version}: t+{(self.now - began) / 3600:6.1f}h  {on}/{len(self.hosts)}"
                            f" hosts on it, {self.ledger.requests} requests",
                            end="",
                            flush=True,
                        )
                if progress:
                    print()
                summary["releases"][version] = self._release_summary(
                    version, status, self.now - began
                )
                if self.ledger.violations:
                    break
        summary.update(
            requests=self.ledger.requests,
            wall_s=round(time.monotonic() - started_wall, 1),
            violations=self.ledger.violations,
        )
        summary["requests_per_s"] = int(self.ledger.requests / max(summary["wall_s"], 0.001))
        return summary

    def _release_summary(self, version: str, status: Status, took: float) -> dict[str, Any]:
        groups = {}
        for name, info in status.groups.items():
            rollout = next((r for r in info.rollouts if r.version == version), None)
            members = [h for h in self.hosts if h.group == name]
            groups[name] = {
                "hosts": len(members),
                "on_release": sum(h.version == version for h in members),
                "rolled_back": sum(version in h.bad for h in members),
                "started_at": rollout.started_at if rollout else None,
                "finished_at": rollout.finished_at if rollout else None,
                "halted_reason": rollout.halted_reason if rollout else None,
            }
        return {"simulated_hours": round(took / 3600, 2), "groups": groups}


def check_ordering(summary: dict[str, Any], settings: FleetSettings) -> list[str]:
    """A group that waits on another started no earlier than its finish plus the soak."""
    problems = []
    for version, release in summary["releases"].items():
        for name, info in release["groups"].items():
            after = settings.groups[name].after
            if after is None or info["started_at"] is None:
                continue
            finished = release["groups"][after]["finished_at"]
            if finished is None or info["started_at"] < finished + settings.groups[name].soak_s:
                problems.append(f"{version}: {name} started before {after} finished plus soak")
    return problems


@contextlib.contextmanager
def simulated_server(
    policy: Path, workdir: Path, db: str | None, workers: int
) -> Iterator[tuple[str, str, Path]]:
    """`berth serve --test-clock` with this policy; yields (url, admin token, repository)."""
    import yaml

    data = yaml.safe_load(policy.read_text()) or {}
    token = secrets.token_hex(16)
    repository = workdir / "repo"
    data.update(repository=str(repository), admin_token=token)
    # Every simulated host enrols from this one address, thousands in a simulated minute.
    data.setdefault("enrol_rate", 0)
    config = write_config(workdir, data)
    db = db or f"sqlite:///{workdir / 'fleet.sqlite3'}"
    with running_server(config, db, workers=workers, test_clock=True) as server:
        yield server.url, token, repository


def _split(text: str, settings: FleetSettings, hosts: int) -> dict[str, int]:
    if not text:
        names = list(settings.groups)
        return {
            name: hosts // len(names) + (i < hosts % len(names)) for i, name in enumerate(names)
        }
    split = {}
    for part in text.split(","):
        name, _, count = part.partition("=")
        if name not in settings.groups or not count.isdigit():
            raise UserError(f"--split: expected GROUP=N with a group of the policy, got {part!r}")
        split[name] = int(count)
    return split


def _fail(items: list[str]) -> dict[tuple[str, str | None], float]:
    fail: dict[tuple[str, str | None], float] = {}
    for item in items:
        key, _, share = item.partition("=")
        version, _, group = key.partition("@")
        try:
            fail[(version, group or None)] = float(share)
        except ValueError:
            raise UserError(f"--fail: expected VERSION[@GROUP]=SHARE, got {item!r}") from None
    return fail


def run_cli(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.policy)
        plan = Plan(
            hosts=args.hosts,
            releases=args.releases.split(","),
            fail=_fail(args.fail),
            split=_split(args.split, settings, args.hosts),
            poll_s=parse_duration(args.poll),
            tick_s=parse_duration(args.tick),
            max_time_s=parse_duration(args.max_time),
            seed=args.seed,
        )
    except (SettingsError, ValueError) as error:
        raise UserError(str(error)) from None
    with (
        tempfile.TemporaryDirectory(prefix="berth-simulate-") as tmp,
        simulated_server(args.policy, Path(tmp), args.db, args.workers) as (url, token, repository),
    ):
        print(f"simulating {sum(plan.split.values())} hosts {plan.split} against {url}")
        summary = Simulation(plan, url, token, settings).run(
            repository, progress=sys.stdout.isatty()
        )
    summary["violations"] += check_ordering(summary, settings)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 1 if summary["violations"] else 0
