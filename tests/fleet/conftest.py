"""Fleet test fixtures: a private PostgreSQL cluster, real `berth serve` processes, releases."""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from updater.client import FleetClient
from updater.fleet.launch import Server, start_server, stop_server, write_config
from updater.fleet.pgcluster import postgres_cluster
from updater.fleet.store import Store
from updater.fleet.synthetic import synthetic_release, write_targets
from updater.wire import Report, ReportEvent

ADMIN = "admin-secret"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def berth() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the `berth` CLI as a user would, in a process of its own."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cli.main", *args],
            cwd=ROOT,
            capture_output=True,
            check=False,
            text=True,
            timeout=120,
        )

    return run


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[str]:
    """One PostgreSQL server for the whole session; each test takes its own database in it."""
    with postgres_cluster() as url:
        yield url


@pytest.fixture
def pg_url(pg_cluster: str) -> str:
    import psycopg

    name = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(pg_cluster, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return pg_cluster.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database for a Store, once on SQLite and once on PostgreSQL."""
    if request.param == "postgres":
        return request.getfixturevalue("pg_url")
    return f"sqlite:///{tmp_path / 'fleet.sqlite3'}"


@pytest.fixture
def db(request: pytest.FixtureRequest) -> str | None:
    """None (a fresh SQLite file) or a fresh PostgreSQL database, for tests run on both."""
    return (
        request.getfixturevalue("pg_url")
        if getattr(request, "param", "sqlite") == "postgres"
        else None
    )


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    opened = Store(db_url)
    yield opened
    opened.close()


@dataclass
class FleetUnderTest:
    """One policy, one repository, one database, and the servers running them."""

    workdir: Path
    config: Path
    db: str
    servers: list[Server] = field(default_factory=list)
    session: requests.Session = field(default_factory=requests.Session)
    # Each node's host credential from its enrolment, as its agent keeps it on /var.
    credentials: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.servers[0].url

    def publish(self, *versions: str, withdrawn: tuple[str, ...] = ()) -> None:
        write_targets(
            self.workdir / "repo",
            [synthetic_release(v, withdrawn=v in withdrawn) for v in versions],
        )
        for server in self.servers:
            self.admin("POST", "/admin/reload", url=server.url).raise_for_status()

    def admin(
        self,
        method: str,
        path: str,
        body: Any = None,
        url: str | None = None,
        token: str | None = ADMIN,
    ) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.session.request(
            method, (url or self.url) + path, json=body, headers=headers, timeout=30
        )

    def advance(self, seconds: float) -> None:
        self.admin("POST", "/admin/clock", {"advance_s": seconds}).raise_for_status()

    def status(self) -> dict[str, Any]:
        response = self.admin("GET", "/admin/status")
        response.raise_for_status()
        return response.json()

    def client(
        self, node: str, group: str = "default", token: str | None = None, server: int = 0
    ) -> FleetClient:
        def keep(credential: str) -> None:
            self.credentials[node] = credential

        return FleetClient(
            self.servers[server].url,
            node,
            group,
            token=token,
            credential=self.credentials.get(node),
            on_enrol=keep,
            verify=self.servers[server].verify,
        )

    def finish_update(
        self,
        node: str,
        outcome: ReportEvent = ReportEvent.BLESSED,
        group: str = "default",
        token: str | None = None,
        server: int = 0,
    ) -> None:
        """Report an offered 1.0.0 → 1.1.0 update through to its outcome, as the host's agent would."""
        client = self.client(node, group, token, server)
        steps = (ReportEvent.DOWNLOADING, ReportEvent.STAGED, ReportEvent.REBOOTING, outcome)
        for seq, event in enumerate(steps, 1):
            client.report(Report(node, group, seq, event, "1.1.0", "1.0.0"))

    def start(self, workers: int = 1) -> Server:
        server = start_server(self.config, self.db, workers=workers, test_clock=True)
        self.servers.append(server)
        return server


@pytest.fixture
def make_fleet(tmp_path: Path) -> Iterator[Callable[..., FleetUnderTest]]:
    fleets: list[FleetUnderTest] = []

    def make(
        groups: dict[str, Any],
        *,
        db: str | None = None,
        servers: int = 1,
        releases: tuple[str, ...] = ("1.1.0",),
        **top: Any,
    ) -> FleetUnderTest:
        workdir = tmp_path / f"fleet{len(fleets)}"
        workdir.mkdir()
        config = write_config(
            workdir, {"repository": "repo", "admin_token": ADMIN, "groups": groups, **top}
        )
        write_targets(workdir / "repo", [synthetic_release(v) for v in releases])
        fleet = FleetUnderTest(workdir, config, db or f"sqlite:///{workdir / 'fleet.sqlite3'}")
        fleets.append(fleet)
        for _ in range(servers):
            fleet.start()
        return fleet

    yield make
    for fleet in fleets:
        for server in fleet.servers:
            stop_server(server)
