"""The swarm drain (updater/agent/swarm.py): docker's output read and judged, and the
drain's wait bounded.

No docker daemon runs here (the client is installed, the daemon not: a swarm needs
one). info-no-daemon.json is what this machine's docker client printed; the other
samples are written in the shape docker's formatter prints (`docker node ps` and
`docker service ls` with ``--format '{{json .}}'``, `docker info` with
``{{json .Swarm}}``). The drain loop runs on a scripted docker CLI for the same reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from updater.agent.swarm import (
    SwarmError,
    SwarmNode,
    Task,
    parse_info,
    parse_services,
    parse_tasks,
    still_here,
    unplaceable,
)

DATA = Path(__file__).parent / "data/swarm"


def sample(name: str) -> str:
    return (DATA / name).read_text()


def test_docker_info_says_which_node_this_is_and_whether_it_is_a_manager() -> None:
    manager = parse_info(sample("info-manager.json"))
    assert (manager.node_id, manager.state, manager.manager) == ("k2x7q9w1m4e8r5t3y6u0i2o4p", "active", True)
    assert parse_info(sample("info-worker.json")).manager is False
    outside = parse_info(sample("info-no-daemon.json"))
    assert (outside.node_id, outside.state, outside.manager) == ("", "", False)


def test_node_ps_rows_name_their_service_and_whether_they_still_hold_a_container() -> None:
    running = parse_tasks(sample("node-ps-running.jsonl"))
    assert [(t.name, t.service, t.live) for t in running] == [
        ("web.2", "web", True), ("web.2", "web", False),
        ("exporter.k2x7q9w1m4e8r5t3y6u0i2o4p", "exporter", True)]
    # Draining: the desired state is shutdown, but the container runs until it stopped.
    assert all(t.live and t.desired == "shutdown" for t in parse_tasks(sample("node-ps-draining.jsonl"))
               if t.current == "running")
    assert not any(t.live for t in parse_tasks(sample("node-ps-drained.jsonl")))


def test_service_ls_gives_each_services_mode_and_replicas() -> None:
    services = parse_services(sample("service-ls-whole.jsonl"))
    assert [(s.name, s.mode, s.running, s.desired) for s in services] == [
        ("web", "replicated", 3, 3), ("exporter", "global", 2, 2)]


@pytest.mark.parametrize("tasks, services, waiting", [
    ("node-ps-running.jsonl", "service-ls-whole.jsonl", "tasks still on this node: web.2"),
    ("node-ps-draining.jsonl", "service-ls-short.jsonl", "tasks still on this node: web.2"),
    # Gone from here, but not yet running elsewhere: still waiting.
    ("node-ps-drained.jsonl", "service-ls-short.jsonl", "services not yet back to all their replicas: web 2/3"),
    ("node-ps-drained.jsonl", "service-ls-whole.jsonl", None),
])
def test_the_drain_is_done_once_the_replicated_tasks_run_elsewhere(tasks: str, services: str,
                                                                    waiting: str | None) -> None:
    # A global service's task (the exporter) never holds the drain up: it runs on every node.
    assert still_here(parse_tasks(sample(tasks)), parse_services(sample(services))) == waiting


def test_a_task_of_a_service_no_longer_listed_does_not_hold_the_drain() -> None:
    assert still_here([Task("gone.1", "running", "running")], []) is None


@pytest.mark.parametrize("text", ["not json\n", "[1, 2]\n", '{"a": 1}\n{"b": 2}\n'])
def test_output_docker_never_prints_is_refused_with_a_reason(text: str) -> None:
    with pytest.raises(SwarmError, match="docker info"):
        parse_info(text)


class ScriptedDocker:
    """The docker CLI's answers, in order per command (no daemon here to ask)."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers, self.calls = answers, []  # type: ignore[var-annotated]

    def __call__(self, argv: Sequence[str]) -> str:
        key = " ".join(argv[:2])
        self.calls.append(" ".join(argv))
        queue = self.answers[key]
        if not queue:
            raise SwarmError(f"docker {key}: no answer")
        answer = queue[0] if len(queue) == 1 else queue.pop(0)
        if answer.startswith("error:"):
            raise SwarmError(answer)
        return answer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def node(docker: ScriptedDocker, clock: Clock) -> SwarmNode:
    return SwarmNode(docker, clock, clock.sleep)


def test_the_drain_waits_until_the_tasks_run_elsewhere() -> None:
    docker = ScriptedDocker({
        "info --format": [sample("info-manager.json")],
        "node update": [""],
        "node ps": [sample("node-ps-running.jsonl"), sample("node-ps-draining.jsonl"), sample("node-ps-drained.jsonl")],
        "service ls": [sample("service-ls-whole.jsonl"), sample("service-ls-short.jsonl"),
                       sample("service-ls-short.jsonl"), sample("service-ls-whole.jsonl")],
        # The third look: gone from here, the replacement not yet running (but placeable).
        "service ps": [sample("service-ps-scheduling.jsonl")],
    })
    clock = Clock()
    result = node(docker, clock).drain(60)
    assert result.ok and result.output == "node k2x7q9w1m4e8r5t3y6u0i2o4p drained"
    assert docker.calls[1] == "node update --availability drain k2x7q9w1m4e8r5t3y6u0i2o4p"
    assert clock.now == 6.0  # four looks, two seconds apart


def test_a_drain_past_its_budget_says_what_it_waited_for() -> None:
    docker = ScriptedDocker({"info --format": [sample("info-manager.json")], "node update": [""],
                             "node ps": [sample("node-ps-running.jsonl")],
                             "service ls": [sample("service-ls-whole.jsonl")]})
    clock = Clock()
    result = node(docker, clock).drain(10)
    assert (result.returncode, result.output) == (None, "tasks still on this node: web.2")
    assert clock.now <= 10


@pytest.mark.parametrize("info, error", [
    ("info-worker.json", "only a manager can drain it"),
    ("info-no-daemon.json", "not in a swarm"),
])
def test_a_node_that_cannot_drain_itself_fails_the_hook(info: str, error: str) -> None:
    docker = ScriptedDocker({"info --format": [sample(info)]})
    result = node(docker, Clock()).drain(60)
    assert result.returncode == 1 and error in result.output
    assert docker.calls == ["info --format {{json .Swarm}}"]  # nothing changed


def test_a_task_no_node_can_take_is_told_from_one_being_scheduled() -> None:
    assert unplaceable(sample("service-ps-stuck.jsonl")) == {"web": 1}
    assert unplaceable(sample("service-ps-scheduling.jsonl")) == {}
    services = parse_services(sample("service-ls-short.jsonl"))
    drained = parse_tasks(sample("node-ps-drained.jsonl"))
    assert still_here(drained, services, unplaceable(sample("service-ps-stuck.jsonl"))) is None


def test_the_drain_does_not_wait_for_a_task_only_this_node_could_take() -> None:
    # web runs at most one replica per node: with this node drained, web.2 waits for it.
    docker = ScriptedDocker({
        "info --format": [sample("info-manager.json")], "node update": [""],
        "node ps": [sample("node-ps-draining.jsonl"), sample("node-ps-drained.jsonl")],
        "service ls": [sample("service-ls-short.jsonl")],
        "service ps": [sample("service-ps-scheduling.jsonl"), sample("service-ps-stuck.jsonl")],
    })
    clock = Clock()
    assert node(docker, clock).drain(60).ok
    assert clock.now == 4.0  # draining; drained, web.2 not yet scheduled; drained, web.2 stuck
    assert docker.calls[-1] == "service ps --no-trunc --format {{json .}} web"


def test_after_the_bless_the_node_is_made_active_and_waits_for_the_swarm_to_be_whole() -> None:
    docker = ScriptedDocker({"info --format": [sample("info-manager.json")], "node update": [""],
                             "service ls": [sample("service-ls-short.jsonl"), sample("service-ls-whole.jsonl")]})
    clock = Clock()
    result = node(docker, clock).activate(60)
    assert result.ok and clock.now == 2.0
    assert docker.calls[1] == "node update --availability active k2x7q9w1m4e8r5t3y6u0i2o4p"
    refused = ScriptedDocker({"info --format": [sample("info-manager.json")],
                              "node update": ["error: docker node update: node not found"]})
    assert node(refused, Clock()).activate(60).returncode == 1


def test_an_activation_past_its_budget_says_what_it_waited_for() -> None:
    docker = ScriptedDocker({"info --format": [sample("info-manager.json")], "node update": [""],
                             "service ls": [sample("service-ls-short.jsonl")]})
    clock = Clock()
    result = node(docker, clock).activate(10)
    assert result.returncode is None and clock.now <= 10
    assert result.output.endswith("services not yet back to all their replicas: web 2/3")
