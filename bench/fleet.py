"""Fleet server throughput and latency: decisions, FleetLock, and a static file as the baseline.

Starts a real `berth serve` (SQLite, or a private PostgreSQL cluster with
--postgres) on 127.0.0.1 with a synthetic release in rollout, over HTTPS with
a CA made for the run (or plain HTTP with --insecure-http), then drives it
with a lean keep-alive HTTP/1.1 load generator (asyncio + uvloop, raw
sockets, so the client costs little of the shared CPU) and prints requests/s
and p50/p99 latency per scenario, plus the largest fleet one server holds at
a 5-minute poll interval. Every host enrols first and sends its host
credential with each call, as agents do; "first contact" is that enrolment
plus the host's first check (two requests).

    ~/.cache/berth/venv/bin/python bench/fleet.py [--postgres] [--workers 2] [--seconds 10] [--insecure-http]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from updater.fleet.ca import make_server_tls
from updater.fleet.launch import running_server, write_config
from updater.fleet.pgcluster import postgres_cluster
from updater.fleet.synthetic import synthetic_release, write_targets
from updater.wire import HOST_CREDENTIAL_HEADER

# One request of a batch: its bytes, or made from the answer to the one before
# (a check after an enrolment carries the credential that enrolment returned).
Step = bytes | Callable[[bytes], bytes]

POLICY = {
    "repository": "repo",
    # The load generator is one address enrolling thousands of hosts.
    "enrol_rate": 0,
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


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return status, await reader.readexactly(length)


async def _drive(
    port: int,
    make: Callable[[int], list[Step]],
    connections: int,
    seconds: float,
    tls: ssl.SSLContext | None,
) -> tuple[int, list[float], dict[int, int]]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    stop = time.perf_counter() + seconds

    async def worker(index: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
        counter = index
        while time.perf_counter() < stop:
            batch = make(counter)
            if not batch:
                break
            answer = b""
            for step in batch:
                raw = step if isinstance(step, bytes) else step(answer)
                started = time.perf_counter()
                writer.write(raw)
                status, answer = await _read_response(reader)
                latencies.append(time.perf_counter() - started)
                statuses[status] = statuses.get(status, 0) + 1
            counter += connections
        writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(connections)))
    elapsed = time.perf_counter() - began
    return int(len(latencies) / elapsed), latencies, statuses


def _check(node: str, credential: str) -> bytes:
    body = {"node_id": node, "group": "default", "current_version": "1.0.0"}
    return _request("POST", "/v1/update/check", body, f"{HOST_CREDENTIAL_HEADER}: {credential}\r\n")


def _enrol(node: str) -> bytes:
    return _request("POST", "/v1/enrol", {"node_id": node, "group": "default"})


def scenarios(credentials: dict[str, str]) -> dict[str, Callable[[int], list[Step]]]:
    rng = random.Random(7)
    nodes = list(credentials)

    def decision_known(i: int) -> list[Step]:
        # A fleet in rollout that the server already knows: most hosts wait for
        # their wave, the 5 % in it are offered once and then told to carry on.
        node = rng.choice(nodes)
        return [_check(node, credentials[node])]

    def decision_new(i: int) -> list[Step]:
        # A host the server has never seen: it enrols, then asks with its new credential.
        node = f"new-{i:09d}"
        return [_enrol(node), lambda answer: _check(node, json.loads(answer)["credential"])]

    def lock(i: int) -> list[Step]:
        node = rng.choice(nodes)
        body = {"client_params": {"id": node, "group": "default"}}
        header = f"fleet-lock-protocol: true\r\n{HOST_CREDENTIAL_HEADER}: {credentials[node]}\r\n"
        return [
            _request("POST", "/v1/pre-reboot", body, header),
            _request("POST", "/v1/steady-state", body, header),
        ]

    def static(i: int) -> list[Step]:
        return [_request("GET", "/repo/metadata/targets.json")]

    return {
        "static file (baseline)": static,
        "decision, first contact": decision_new,
        "decision, known hosts": decision_known,
        "lock (pre-reboot/steady-state)": lock,
    }


def warm_up(port: int, fleet_size: int, tls: ssl.SSLContext | None) -> dict[str, str]:
    """Enrol every node and let it check once, as in a fleet that has been polling;
    return each node's credential."""
    import uvloop

    nodes = iter(range(fleet_size))
    credentials: dict[str, str] = {}

    def enrol_and_check(node: str) -> Callable[[bytes], bytes]:
        def then(answer: bytes) -> bytes:
            credentials[node] = json.loads(answer)["credential"]
            return _check(node, credentials[node])

        return then

    def next_node(i: int) -> list[Step]:
        index = next(nodes, None)
        if index is None:
            return []
        node = f"node-{index:07d}"
        return [_enrol(node), enrol_and_check(node)]

    uvloop.run(_drive(port, next_node, 32, 3600, tls))
    return credentials


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL instead of SQLite")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--fleet", type=int, default=20_000, help="distinct node ids")
    parser.add_argument("--insecure-http", action="store_true", help="plain HTTP instead of HTTPS")
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
        tls = None if args.insecure_http else make_server_tls(workdir)
        client_tls = None if tls is None else ssl.create_default_context(cafile=str(tls.ca))
        server = stack.enter_context(
            running_server(write_config(workdir, POLICY), db, workers=args.workers, tls=tls)
        )
        port = int(server.url.rsplit(":", 1)[1])
        backend = "PostgreSQL" if args.postgres else "SQLite"
        print(
            f"berth serve, {backend}, {'HTTPS' if tls else 'plain HTTP'}, host credentials,"
            f" {args.workers} worker(s), {args.connections} connections,"
            f" {args.seconds:g} s per scenario, fleet of {args.fleet} node ids"
        )
        credentials = warm_up(port, args.fleet, client_tls)
        results = {}
        for name, make in scenarios(credentials).items():
            rps, latencies, statuses = uvloop.run(
                _drive(port, make, args.connections, args.seconds, client_tls)
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
