"""Scenario 4: three hosts in one group take v2 under a reboot lock and a rate limit.

Proven from the fleet server's own records, as an operator would read them: its
log of reboot-lock grants and releases (`/admin/locks/<group>`) shows the reboots
never overlapped, and its log of the updates it let start (`/admin/updates/<group>`)
shows the rate was kept; the hosts' reports show each one's update was whole.
The hosts boot one after another, each with two virtual CPUs: under TCG on this
2-core machine three guests booting side by side with one vCPU each took 315 s to
be ready against ~90 s for one at a time, and a reboot with the other two idle
took ~4 min on one vCPU; only one host reboots at a time, so it gets both cores.

The same three hosts are a Docker Swarm of three managers, as a user would declare it
(the `swarm:` key of the declaration each gets in the credential berth.user_data, with
`swarm_drain: true`); they join by themselves over a private LAN (a VDE switch), the
fleet server handing the first manager's join token to the others. A service of three
replicas, one per node, published through the routing mesh runs on them while v2 rolls out: a client
here asks each host's forwarded port in turn, a manager's `docker service ps` is sampled
throughout (qemu/mesh.py), and each host's journal orders its drain, reboot, activation
and lock release.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from qemu.container_image import TAG
from qemu.lab import V1, V2, Host, Lab, lab_group
from qemu.lan import address
from qemu.mesh import Client, SwarmWatch, Watching, longest_silence
from updater.fleet.locks import LockEventKind, most_held
from updater.fleet.policy import most_in_flight, most_started_in_any_period

pytestmark = [pytest.mark.slow, pytest.mark.qemu]
GROUP = "fleet"
MAX_UPDATES, PERIOD_S = 2, 60
SERVICE, SERVICE_PORT = "web", 8000
SWARM_WAIT_S = 900  # three managers joined and the service's three replicas running, on a loaded machine
# busybox httpd in the foreground of a shell that ends on SIGTERM (as the seed's example).
SERVE = (f"echo {SERVICE} answering > /tmp/index.html && trap 'exit 0' TERM; "
         f"busybox httpd -f -p {SERVICE_PORT} -h /tmp & wait")
# What each host's agent journals, in the order a drained reboot must show them.
DRAINED_REBOOT = ("reboot lock granted", "pre-reboot hooks done: builtin:swarm-drain", "rebooting: ",
                  "post-bless hooks done: builtin:swarm-active", "reboot lock given back")


def declaration(lan: int) -> str:
    """The host's declaration: a swarm manager advertising its LAN address, drained before reboots."""
    return ("#cloud-config\nberth:\n  agent: {swarm_drain: true}\n"
            f"  swarm:\n    role: manager\n    advertise_addr: {address(lan)}\n")


def wait_for(what: str, ready: Callable[[], bool], timeout: float, hosts: list[Host]) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s; " + "; ".join(
                f"{h.name}: {swarm_story(h)}" for h in hosts))
        time.sleep(3)


def swarm_story(host: Host) -> str:
    """What the host's agent said about the swarm, and what docker says (for a failure's message)."""
    done = host.run("cat /var/lib/berth/swarm.json; docker info --format '{{json .Swarm}}'; ip -br a; "
                    "journalctl -t berth-agent -o cat --no-pager | grep -i swarm | tail -n 8", check=False, timeout=60)
    return done.stdout + done.stderr


def json_rows(host: Host, command: str) -> list[dict[str, object]]:
    done = host.run(command, check=False, timeout=30)
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()] if done.returncode == 0 else []


def swarm_state(host: Host) -> str:
    done = host.run("cat /var/lib/berth/swarm.json", check=False, timeout=30)
    return str(json.loads(done.stdout).get("state")) if done.returncode == 0 else ""


def ready_nodes(manager: Host) -> int:
    return sum(1 for n in json_rows(manager, "docker node ls --format '{{json .}}'")
               if n.get("Status") == "Ready" and n.get("Availability") == "Active")


def replicas(manager: Host) -> str:
    rows = json_rows(manager, f"docker service ls --filter name={SERVICE} --format '{{{{json .}}}}'")
    # "3/3", or "3/3 (max 1 per node)" for a service with a cap per node.
    return str(rows[0].get("Replicas")).split(" ", 1)[0] if rows else ""


def in_order(lines: list[str], markers: tuple[str, ...]) -> bool:
    """Whether each marker starts a line after the line the one before it started."""
    at = 0
    for marker in markers:
        at = next((i + 1 for i in range(at, len(lines)) if lines[i].startswith(marker)), -1)
        if at < 0:
            return False
    return True


def test_three_hosts_reboot_one_at_a_time_within_the_rate_and_their_swarm_service_stays_up(
    tmp_path: Path, release: Callable[[str], Path], narrate: Callable[[str], None], app_archive: Path
) -> None:
    policy = lab_group(max_concurrent_reboots=1, rate={"max_updates": MAX_UPDATES, "period": f"{PERIOD_S}s"})
    with Lab(tmp_path, narrate) as lab:
        lab.publish(release(V1))
        with lab.serve({GROUP: policy}):
            hosts = []
            for lan, name in enumerate(("host1", "host2", "host3"), 1):
                hosts.append(lab.boot(name, release(V1), group=GROUP, lan=lan, forwards=(SERVICE_PORT,),
                                      user_data=declaration(lan)))
                assert hosts[-1].wait_ready(1200).version == V1
                # No registry is reachable: the service's image is loaded on every node.
                assert hosts[-1].load_image(app_archive) == TAG
            swarm_began = time.monotonic()
            manager = hosts[0]
            wait_for("the three hosts joined the swarm", lambda: all(swarm_state(h) == "joined" for h in hosts)
                     and ready_nodes(manager) == 3, SWARM_WAIT_S, hosts)
            # One replica per node: swarm never moves a task back by itself, so without the cap
            # the second host's drain found the first's task beside its own and took two of the
            # three down at once (seen: one running for 11 s). With it, a drained node's task waits,
            # pending, until that node is active again (the drain does not wait for it).
            manager.run(f"docker service create --detach --name {SERVICE} --replicas 3 --replicas-max-per-node 1 "
                        f"--no-resolve-image --publish published={SERVICE_PORT},target={SERVICE_PORT} "
                        f"{TAG} sh -c \"{SERVE}\"")
            wait_for("the service's three replicas running", lambda: replicas(manager) == "3/3", SWARM_WAIT_S, hosts)
            client = Client([host.forwarded(SERVICE_PORT) for host in hosts])
            wait_for("every host's port answering", lambda: all(client.ask(p) for p in client.ports), SWARM_WAIT_S, hosts)
            swarm_setup_s = time.monotonic() - swarm_began
            narrate(f"swarm of three managers with {SERVICE} 3/3 up {swarm_setup_s:.0f} s after the third host was ready")
            watch = SwarmWatch(SERVICE, [(host.name, host.vm.run) for host in hosts])
            lab.publish(release(V2))
            rollout_began = time.time()
            with Watching(client, watch):
                reports = {host.name: lab.follow(host, V2, ("blessed", "rolled_back", "failed"), 3600)
                           for host in hosts}
                assert lab.locks_given_back(GROUP) == []
            rollout_ended = time.time()
            journals = {host.name: host.run("journalctl -t berth-agent -o cat --no-pager").stdout.splitlines()
                        for host in hosts}
            node_ids = {host.name: json.loads(host.run("cat /var/lib/berth/swarm.json").stdout)["node_id"]
                        for host in hosts}
            nodes_after = json_rows(manager, "docker node ls --format '{{json .}}'")
            replicas_after = replicas(manager)
            locks = lab.admin(f"/admin/locks/{GROUP}")
            updates = lab.admin(f"/admin/updates/{GROUP}")
            fleet = lab.admin("/admin/status")["groups"][GROUP]
            transfers = [lab.admin(f"/admin/hosts/{host.node_id}")["transfers"][-1] for host in hosts]

    for name, events in reports.items():
        assert [r["event"] for r in events] == ["downloading", "staged", "rebooting", "blessed"], name
    nodes = {host.node_id for host in hosts}

    # Every host rebooted under a lock it was granted and gave back, one at a time.
    lock_events = [(e["at"], e["node_id"], LockEventKind(e["event"])) for e in locks["events"]]
    assert {node for _, node, kind in lock_events if kind is LockEventKind.GRANTED} == nodes
    assert {node for _, node, kind in lock_events if kind is LockEventKind.RELEASED} == nodes
    assert most_held(lock_events).count == 1
    for name, events in reports.items():
        node = next(h.node_id for h in hosts if h.name == name)
        granted = min(at for at, n, kind in lock_events if n == node and kind is LockEventKind.GRANTED)
        released = max(at for at, n, kind in lock_events if n == node and kind is LockEventKind.RELEASED)
        at = {r["event"]: r["at"] for r in events}
        assert granted <= at["rebooting"] and at["blessed"] <= released, name

    # The server let no more updates start per period, or run at once, than the rate allows.
    started = [u for u in updates["updates"] if u["version"] == V2]
    assert {u["node_id"] for u in started} == nodes and len(started) == 3
    assert all(u["outcome"] == "blessed" for u in started)
    assert most_started_in_any_period([u["started_at"] for u in started], PERIOD_S) <= MAX_UPDATES
    assert most_in_flight((u["started_at"], u["finished_at"]) for u in started) <= MAX_UPDATES

    assert fleet["hosts_by_version"] == {V2: 3}
    # Each host built v2 from its booted slot (the lab publishes block indexes, as `berth publish` does).
    assert [(t["version"], t["path"]) for t in transfers] == [(V2, "delta")] * 3, transfers
    assert fleet["locks_held"] == []

    # The swarm: each host drained after its lock was granted and before its reboot, made
    # active after its bless, and only then gave the lock back.
    for name, lines in journals.items():
        assert in_order(lines, DRAINED_REBOOT), (name, [line for line in lines if "lock" in line or "hooks" in line])
    assert {n["ID"]: (n["Status"], n["Availability"]) for n in nodes_after} == {
        node: ("Ready", "Active") for node in node_ids.values()}
    assert replicas_after == "3/3"
    # The manager sampled throughout saw every node drained at some point, and never fewer
    # than two of the three replicas running.
    assert watch.samples, f"no sample of docker service ps ({watch.failures} failed)"
    assert all(s.running >= 2 for s in watch.samples), [(s.at, s.running) for s in watch.samples if s.running < 2]
    assert {node for s in watch.samples for node, how in s.nodes.items() if how == "drain"} == set(node_ids.values())

    # What a client saw (measured, not judged): the longest stretch with no answer, and each
    # host's time from the lock granted to the lock released.
    answers = [at for at, _ in client.answers]
    held = {name: max(at for at, n, k in lock_events if n == node and k is LockEventKind.RELEASED)
            - min(at for at, n, k in lock_events if n == node and k is LockEventKind.GRANTED)
            for name, node in ((h.name, h.node_id) for h in hosts)}
    figures = {"longest_silence_s": round(longest_silence(answers, rollout_began, rollout_ended), 1),
               "answers": len(answers), "tries": client.tries, "lock_held_s": {n: round(t) for n, t in held.items()},
               "samples": len(watch.samples), "fewest_running": min(s.running for s in watch.samples),
               "swarm_setup_s": round(swarm_setup_s), "rollout_s": round(rollout_ended - rollout_began)}
    narrate(f"swarm figures: {figures}")
    (tmp_path / "swarm-figures.json").write_text(json.dumps(figures, indent=1) + "\n")
