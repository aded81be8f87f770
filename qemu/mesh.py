"""Watching a swarm service from outside while its hosts reboot, for the lab's scenario 4.

- ``Client``: what a user of the service sees. Twice a second it asks the next host's
  forwarded port in turn (the routing mesh answers on every node, whichever node runs the
  task) and, when that one does not answer, the one after it at once, as a client with a
  list of endpoints does; it keeps the time of every answer, so the longest stretch with
  none is the outage such a client lived through (to within ASK_EVERY_S).
- ``SwarmWatch``: what the swarm says. Every few seconds a manager (the first of the
  hosts that answers over SSH) lists the service's tasks and the nodes; each sample
  keeps how many tasks were running and each node's availability.

Both are kept light: every request and every sample is work for the guests under TCG
(an HTTP request through the mesh, an SSH session and two docker commands), on the same
two cores the rebooting host boots on.

Both run in a thread of the test while it waits on the fleet server; judging what they
saw is pure (``longest_silence``, ``running``, ``availability``).
"""

from __future__ import annotations

import itertools
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Self

from updater.agent.swarm import SwarmError, json_lines

ANSWER_TIMEOUT_S = 1.5  # a port that gives no answer in this long is down for that try
ASK_EVERY_S = 0.5  # between a client's answered requests
# Between the watch's samples: a drained node stays drained for its whole reboot (minutes).
SAMPLE_S = 5.0


def longest_silence(answers: Sequence[float], start: float, end: float) -> float:
    """The longest stretch within [start, end] with no answer (answer times, any order)."""
    times = [start, *sorted(t for t in answers if start <= t <= end), end]
    return max(b - a for a, b in itertools.pairwise(times))


def running(service_ps: str) -> int:
    """How many of a service's tasks run, from ``docker service ps --format '{{json .}}'``
    (a task told to shut down still counts until it stopped)."""
    return sum(1 for row in json_lines(service_ps, "docker service ps")
               if str(row.get("CurrentState") or "").startswith("Running"))


def availability(node_ls: str) -> dict[str, str]:
    """Each node's availability (``active``, ``drain``, ``pause``) by node ID, from
    ``docker node ls --format '{{json .}}'``."""
    return {str(row["ID"]): str(row.get("Availability") or "").lower()
            for row in json_lines(node_ls, "docker node ls")}


@dataclass
class Client:
    """Asks ``ports`` (127.0.0.1) in turn for ``/`` until stopped, going on to the next port
    at once when one does not answer; ``answers``: when each answered."""

    ports: Sequence[int]
    answers: list[tuple[float, int]] = field(default_factory=list)  # (time.time(), port)
    tries: int = 0
    _next: int = 0  # the port asked first at the next request

    def ask(self, port: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=ANSWER_TIMEOUT_S) as answer:
                return bool(answer.status == 200 and answer.read())
        except (OSError, urllib.error.URLError):
            return False

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            for turn in range(len(self.ports)):
                index = (self._next + turn) % len(self.ports)
                self.tries += 1
                if self.ask(self.ports[index]):
                    self.answers.append((time.time(), self.ports[index]))
                    break
            self._next = (self._next + 1) % len(self.ports)
            stop.wait(ASK_EVERY_S)


@dataclass(frozen=True)
class Sample:
    at: float  # time.time() once the manager answered
    manager: str
    running: int
    nodes: dict[str, str]  # node ID -> availability


@dataclass
class SwarmWatch:
    """Samples ``service`` and the nodes from the first manager of ``managers`` that
    answers (name, run-a-command) until stopped."""

    service: str
    managers: Sequence[tuple[str, Callable[..., subprocess.CompletedProcess[str]]]]
    samples: list[Sample] = field(default_factory=list)
    failures: int = 0
    _first: int = 0  # the manager that answered last is asked first

    def sample(self) -> Sample | None:
        command = (f"docker service ps {self.service} --format '{{{{json .}}}}' && echo --- && "
                   "docker node ls --format '{{json .}}'")
        for turn in range(len(self.managers)):
            index = (self._first + turn) % len(self.managers)
            name, run = self.managers[index]
            try:
                done = run(command, check=False, timeout=10)
            except subprocess.TimeoutExpired:
                done = None
            if done is not None and done.returncode == 0 and "---" in done.stdout:
                tasks, _, nodes = done.stdout.partition("---")
                try:
                    sample = Sample(time.time(), name, running(tasks), availability(nodes))
                except SwarmError:
                    self.failures += 1
                    continue
                self._first = index
                return sample
            self.failures += 1
        return None

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            if (sample := self.sample()) is not None:
                self.samples.append(sample)
            stop.wait(SAMPLE_S)


class Watching:
    """Runs the client and the watch in threads for the length of a ``with`` block."""

    def __init__(self, *watchers: Client | SwarmWatch) -> None:
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=w.run, args=(self.stop,), daemon=True) for w in watchers]

    def __enter__(self) -> Self:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)
