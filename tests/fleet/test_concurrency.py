"""Invariants under concurrent clients across two `berth serve` processes, and after SIGKILL.

Two server processes share one database (SQLite file, or PostgreSQL) the way
several servers behind a load balancer would; clients hit both at once.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from updater.client import FleetUnavailable, LockDenied
from updater.fleet.locks import LockEventKind, most_held
from updater.fleet.policy import most_in_flight, most_started_in_any_period

SLOTS = 3
RATE = 7


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest) -> str | None:
    return request.getfixturevalue("pg_url") if request.param == "postgres" else None


def test_never_more_reboot_locks_than_slots_across_processes(
    make_fleet: Any, db: str | None
) -> None:
    fleet = make_fleet({"default": {"max_concurrent_reboots": SLOTS}}, db=db, servers=2)
    holding: set[str] = set()
    guard = threading.Lock()
    most = 0
    granted = 0

    def host(index: int) -> None:
        nonlocal most, granted
        client = fleet.client(f"node-{index}", server=index % 2)
        for _ in range(15):
            try:
                client.pre_reboot()
            except LockDenied:
                continue
            with guard:
                holding.add(client.node_id)
                most, granted = max(most, len(holding)), granted + 1
                assert len(holding) <= SLOTS, holding
            with guard:
                # Leave the set before releasing, so it never counts a slot the server freed.
                holding.discard(client.node_id)
            client.steady_state()

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(host, range(16)))
    assert most <= SLOTS
    assert granted >= SLOTS  # the slots were really contended and handed around
    assert fleet.status()["groups"]["default"]["locks_held"] == []
    # The server's own log, replayed, proves the same: never more holders than slots.
    events = fleet.admin("GET", "/admin/locks/default").json()["events"]
    kinds = [e["event"] for e in events]
    assert kinds.count("granted") == kinds.count("released") == granted
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)
    replay = most_held((e["at"], e["node_id"], LockEventKind(e["event"])) for e in events)
    assert 1 <= replay.count <= SLOTS


def test_rate_limit_is_exact_across_processes(make_fleet: Any, db: str | None) -> None:
    fleet = make_fleet(
        {
            "default": {
                "waves": [{"after": "0s", "percent": 100}],
                "rate": {"max_updates": RATE, "period": "1h"},
            }
        },
        db=db,
        servers=2,
    )

    def race(indexes: list[int]) -> set[int]:
        """Every host asks at once, half through each server; the ones offered the update."""
        start = threading.Barrier(len(indexes))

        def ask(index: int) -> str | None:
            client = fleet.client(f"node-{index}", server=index % 2)
            start.wait()
            return client.check("1.0.0").target_version

        with ThreadPoolExecutor(len(indexes)) as pool:
            answers = pool.map(ask, indexes)
            return {i for i, target in zip(indexes, answers, strict=True) if target is not None}

    first = race(list(range(24)))
    assert len(first) == RATE
    for server in range(2):
        status = fleet.admin("GET", "/admin/status", url=fleet.servers[server].url).json()
        assert status["groups"]["default"]["rate_used"] == RATE
        assert status["groups"]["default"]["hosts_by_state"] == {"offered": RATE, "idle": 24 - RATE}
    # Those updates finish and their period passes: the rest race for the next period's slots.
    for index in first:
        fleet.finish_update(f"node-{index}", server=index % 2)
    fleet.advance(3600)
    second = race(sorted(set(range(24)) - first))
    assert len(second) == RATE
    # The server's own record proves the rate was kept: no period held more than RATE starts.
    log = fleet.admin("GET", "/admin/updates/default").json()
    updates = log["updates"]
    assert log["rate"] == {"max_updates": RATE, "period_s": 3600.0}
    assert {u["node_id"] for u in updates} == {f"node-{i}" for i in first | second}
    assert [u["outcome"] for u in updates] == ["blessed"] * RATE + [None] * RATE
    assert most_started_in_any_period((u["started_at"] for u in updates), 3600) == RATE
    assert most_in_flight((u["started_at"], u["finished_at"]) for u in updates) == RATE


@pytest.mark.slow
def test_sigkill_under_load_loses_no_lock_and_no_counted_update(
    make_fleet: Any, db: str | None
) -> None:
    fleet = make_fleet(
        {
            "default": {
                "waves": [{"after": "0s", "percent": 100}],
                "max_concurrent_reboots": 10_000,
                "rate": {"max_updates": 10_000, "period": "1h"},
            }
        },
        db=db,
        enrol_rate=0,  # hundreds of new hosts a second, all from this machine's address
    )
    offered: set[str] = set()
    locked: set[str] = set()
    guard = threading.Lock()
    stop = threading.Event()

    def host(index: int) -> None:
        step = 0
        while not stop.is_set():
            client = fleet.client(f"node-{index}-{step}")
            step += 1
            try:
                if client.check("1.0.0").target_version:
                    with guard:
                        offered.add(client.node_id)
                client.pre_reboot()
                with guard:
                    locked.add(client.node_id)
            except FleetUnavailable:
                return

    threads = [threading.Thread(target=host, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    while len(locked) < 200:
        threading.Event().wait(0.05)
    fleet.servers[0].kill()
    stop.set()
    for thread in threads:
        thread.join()
    fleet.servers.clear()
    fleet.start()
    status = fleet.status()["groups"]["default"]
    held = set(status["locks_held"])
    assert locked <= held  # every lock a client was granted is still held
    # Every update a client was told to start is still counted (one more may have
    # committed without its answer reaching the client before the kill).
    assert len(offered) <= status["rate_used"] <= len(offered) + 8
    assert len(held) <= len(locked) + 8


@pytest.mark.postgres
def test_server_reconnects_when_postgres_drops_its_connection(make_fleet: Any, pg_url: str) -> None:
    import contextlib

    import psycopg

    fleet = make_fleet({"default": {}}, db=pg_url)
    fleet.client("a").pre_reboot()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    # The request that finds the connection dead may fail; the ones after it must not.
    with contextlib.suppress(FleetUnavailable):
        fleet.client("b").steady_state()
    assert fleet.status()["groups"]["default"]["locks_held"] == ["a"]
    with pytest.raises(LockDenied):
        fleet.client("b").pre_reboot()
