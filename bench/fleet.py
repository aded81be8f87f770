"""Fleet server throughput and latency: decisions, FleetLock, and a static file as the baseline.

Starts a real `berth serve` (SQLite, or a private PostgreSQL cluster with
--postgres) on 127.0.0.1 with a synthetic release in rollout, then drives it
with a lean keep-alive HTTP/1.1 load generator (asyncio + uvloop, raw
sockets, so the client costs little of the shared CPU) and prints requests/s
and p50/p99 latency per scenario, plus the largest fleet one server holds at
a 5-minute poll interval.

    ~/.cache/berth/venv/bin/python bench/fleet.py [--postgres] [--workers 2] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from updater.fleet.launch import running_server, write_config
from updater.fleet.pgcluster import postgres_cluster
from updater.fleet.synthetic import synthetic_release, write_targets

POLICY = {
    "repository": "repo",
    "groups": {
        "default": {
            "max_concurrent_reboots": 100_000,
            "rate": {"max_updates": 1_000_000, "period": "1h"},
            # A release in rollout: 5 % of the hosts may start, the rest wait for their wave.
            "waves": [{"after": "0s", "percent": 5}, {"after": "30d", "percent": 100}],
        }
    },
}


def _request(method: str, path: str, body: dict | None = None, headers: str = "") -> bytes:
    payload = json.dumps(body).encode() if body is not None else b""
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await reader.readexactly(length)
    return status


async def _drive(
    port: int, make: Callable[[int], list[bytes]], connections: int, seconds: float
) -> tuple[int, list[float], dict[int, int]]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    stop = time.perf_counter() + seconds

    async def worker(index: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        counter = index
        while time.perf_counter() < stop:
            batch = make(counter)
            if not batch:
                break
            for raw in batch:
                started = time.perf_counter()
                writer.write(raw)
                status = await _read_response(reader)
                latencies.append(time.perf_counter() - started)
                statuses[status] = statuses.get(status, 0) + 1
            counter += connections
        writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(connections)))
    elapsed = time.perf_counter() - began
    return int(len(latencies) / elapsed), latencies, statuses


def scenarios(fleet_size: int) -> dict[str, Callable[[int], list[bytes]]]:
    rng = random.Random(7)
    nodes = [f"node-{i:07d}" for i in range(fleet_size)]

    def check(node: str) -> list[bytes]:
        body = {"node_id": node, "group": "default", "current_version": "1.0.0"}
        return [_request("POST", "/v1/update/check", body)]

    def decision_known(i: int) -> list[bytes]:
        # A fleet in rollout that the server already knows: most hosts wait for
        # their wave, the 5 % in it are offered once and then told to carry on.
        return check(rng.choice(nodes))

    def decision_new(i: int) -> list[bytes]:
        # Every request from a host the server has never seen: one more write each.
        return check(f"new-{i:09d}")

    def lock(i: int) -> list[bytes]:
        body = {"client_params": {"id": rng.choice(nodes), "group": "default"}}
        header = "fleet-lock-protocol: true\r\n"
        return [
            _request("POST", "/v1/pre-reboot", body, header),
            _request("POST", "/v1/steady-state", body, header),
        ]

    def static(i: int) -> list[bytes]:
        return [_request("GET", "/repo/metadata/targets.json")]

    return {
        "static file (baseline)": static,
        "decision, first contact": decision_new,
        "decision, known hosts": decision_known,
        "lock (pre-reboot/steady-state)": lock,
    }


def warm_up(port: int, fleet_size: int) -> None:
    """Make every node id known to the server, as in a fleet that has been polling."""
    import uvloop

    nodes = iter(range(fleet_size))

    def next_node(i: int) -> list[bytes]:
        node = next(nodes, None)
        return (
            []
            if node is None
            else [
                _request(
                    "POST",
                    "/v1/update/check",
                    {"node_id": f"node-{node:07d}", "group": "default", "current_version": "1.0.0"},
                )
            ]
        )

    uvloop.run(_drive(port, next_node, 32, 3600))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL instead of SQLite")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--fleet", type=int, default=20_000, help="distinct node ids")
    args = parser.parse_args()
    import uvloop

    with tempfile.TemporaryDirectory(prefix="berth-bench-") as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        db = (
            stack.enter_context(postgres_cluster())
            if args.postgres
            else f"sqlite:///{workdir}/fleet.sqlite3"
        )
        write_targets(workdir / "repo", [synthetic_release("1.0.0"), synthetic_release("1.1.0")])
        server = stack.enter_context(
            running_server(write_config(workdir, POLICY), db, workers=args.workers)
        )
        port = int(server.url.rsplit(":", 1)[1])
        backend = "PostgreSQL" if args.postgres else "SQLite"
        print(
            f"berth serve, {backend}, {args.workers} worker(s), {args.connections} connections,"
            f" {args.seconds:g} s per scenario, fleet of {args.fleet} node ids"
        )
        results = {}
        for name, make in scenarios(args.fleet).items():
            if name == "decision, known hosts":
                warm_up(port, args.fleet)
            rps, latencies, statuses = uvloop.run(
                _drive(port, make, args.connections, args.seconds)
            )
            cuts = statistics.quantiles(latencies, n=100)
            results[name] = rps
            print(
                f"  {name:32s} {rps:7d} req/s   p50 {cuts[49] * 1000:6.2f} ms   p99 {cuts[98] * 1000:6.2f} ms"
                f"   statuses {statuses}"
            )
        decisions = results["decision, known hosts"]
        print(
            f"  largest fleet at a 5-minute poll: {decisions * 300:,} hosts ({decisions} decisions/s x 300 s)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
