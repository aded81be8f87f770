"""What scenario 4's client and swarm watch read (qemu/mesh.py), without a swarm: the
docker output is in the shape `--format '{{json .}}'` prints (as tests/agent/data/swarm)."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from qemu.harness import free_port
from qemu.mesh import Client, availability, longest_silence, running

SERVICE_PS = """
{"CurrentState":"Running 2 minutes ago","DesiredState":"Running","Error":"","Name":"web.1","Node":"host2"}
{"CurrentState":"Running 9 seconds ago","DesiredState":"Shutdown","Error":"","Name":"web.2","Node":"host1"}
{"CurrentState":"Shutdown 5 minutes ago","DesiredState":"Shutdown","Error":"","Name":"\\\\_ web.2","Node":"host1"}
{"CurrentState":"Pending 3 seconds ago","DesiredState":"Running","Error":"no suitable node","Name":"web.3","Node":""}
"""
NODE_LS = """
{"Availability":"Drain","Hostname":"berth","ID":"a1","ManagerStatus":"Leader","Status":"Down"}
{"Availability":"Active","Hostname":"berth","ID":"b2","ManagerStatus":"Reachable","Status":"Ready"}
"""
# Far more than a few requests 0.5 s apart take on a loaded machine.
ASKED_WITHIN_S = 30


def test_the_longest_silence_counts_from_the_start_and_to_the_end() -> None:
    assert longest_silence([12.0, 11.0, 18.5], 10.0, 20.0) == 6.5
    assert longest_silence([], 10.0, 20.0) == 10.0
    assert longest_silence([5.0, 30.0], 10.0, 20.0) == 10.0  # answers outside the window do not count
    assert longest_silence([10.0, 12.0, 19.0], 10.0, 20.0) == 7.0


def test_a_task_told_to_stop_runs_until_it_stopped_and_a_pending_one_does_not() -> None:
    assert running(SERVICE_PS) == 2
    assert availability(NODE_LS) == {"a1": "drain", "b2": "active"}


@contextmanager
def serving() -> Iterator[int]:
    """An HTTP server on 127.0.0.1 for the length of the block: its port."""
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()


@pytest.fixture
def web() -> Iterator[int]:
    with serving() as port:
        yield port


def test_the_client_tells_a_port_that_answers_from_one_that_does_not(web: int) -> None:
    client = Client([web, free_port()])
    assert client.ask(web) and not client.ask(client.ports[1])


def asked(client: Client, answers: int) -> Client:
    """``client`` run until it has ``answers`` answers (within ASKED_WITHIN_S)."""
    stop = threading.Event()
    thread = threading.Thread(target=client.run, args=(stop,))
    thread.start()
    deadline = time.monotonic() + ASKED_WITHIN_S
    while len(client.answers) < answers and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join()
    assert len(client.answers) >= answers, (client.answers, client.tries)
    return client


def test_the_client_asks_the_ports_in_turn(web: int) -> None:
    with serving() as other:
        client = asked(Client([web, other]), 4)
    assert [port for _, port in client.answers[:4]] == [*client.ports, *client.ports]


def test_the_client_goes_on_to_the_next_port_at_once_when_one_does_not_answer(web: int) -> None:
    client = asked(Client([free_port(), web]), 3)
    # Every other request begins at the silent port; each is followed at once by one to the next.
    assert {port for _, port in client.answers} == {web}
    assert client.tries - len(client.answers) == (len(client.answers) + 1) // 2
