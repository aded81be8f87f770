"""The agent against a fleet over real HTTP (wire.py's paths, updater.client): it updates
only when offered, takes the FleetLock before rebooting and waits while it is busy,
and after a blessed boot reports and gives the lock back. Reports carry a growing seq.
It enrols once, keeps its host credential (mode 0600) and sends it with every call;
against a real `berth serve` over HTTPS it verifies the server with the CA it is given."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from updater.fleet.ca import make_server_tls
from updater.fleet.launch import running_server, write_config
from updater.wire import (
    CHECK_PATH,
    ENROL_PATH,
    FLEETLOCK_HEADER,
    HOST_CREDENTIAL_HEADER,
    PRE_REBOOT_PATH,
    REPORTS_PATH,
    STEADY_STATE_PATH,
    Enrolment,
    FleetLockRequest,
    Report,
    RollbackCause,
    UpdateCheck,
    UpdateDecision,
)

Host = Any


@dataclass
class FakeServer:
    """A fleet server reduced to the protocol: one offered version, one lock."""

    url: str = ""
    offer: str | None = None
    lock_free: bool = True
    holder: str | None = None
    checks: list[UpdateCheck] = field(default_factory=list)
    reports: list[Report] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)
    enrolments: list[Enrolment] = field(default_factory=list)
    credentials: list[str | None] = field(default_factory=list)  # sent with each later call


@pytest.fixture
def fleet() -> Iterator[FakeServer]:
    state = FakeServer()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.authorizations.append(self.headers.get("Authorization"))
            if self.path == ENROL_PATH:
                state.enrolments.append(Enrolment.from_json(body))
                self._reply(200, {**body, "credential": f"cred-{len(state.enrolments)}"})
                return
            state.credentials.append(self.headers.get(HOST_CREDENTIAL_HEADER))
            if self.path == CHECK_PATH:
                state.checks.append(UpdateCheck.from_json(body))
                self._reply(200, UpdateDecision(state.offer, "wave 1" if state.offer else "not yet", 1).to_json())
            elif self.path == REPORTS_PATH:
                state.reports.append(Report.from_json(body))
                self._reply(200, {"accepted": True})
            elif self.path in (PRE_REBOOT_PATH, STEADY_STATE_PATH):
                assert self.headers[FLEETLOCK_HEADER] == "true"
                node = FleetLockRequest.from_json(body).node_id
                if self.path == STEADY_STATE_PATH:
                    state.holder = None if state.holder == node else state.holder
                    self._reply(200, {})
                elif state.lock_free and state.holder in (None, node):
                    state.holder = node
                    self._reply(200, {})
                else:
                    self._reply(409, {"kind": "failed_lock_semaphore_full", "value": "1 of 1 slots taken"})
            else:
                self._reply(404, {"error": "no such path"})

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def test_agent_follows_the_fleet(host: Host, fleet: FakeServer) -> None:
    host.settings(server_url=fleet.url, group="canary", node_id="node-7")
    host.agent("run", "--once")
    assert host.state()["state"] == "idle" and host.entries() == ["berth_1.0.efi"]
    check = fleet.checks[-1]
    assert (check.node_id, check.group, check.current_version) == ("node-7", "canary", "1.0")

    fleet.offer, fleet.lock_free = "1.1", False
    host.agent("run", "--once")
    assert host.state()["state"] == "staged" and host.rebooted() == 0  # no lock, no reboot
    assert host.verified_boot() == "1.1"

    fleet.lock_free = True
    host.agent("run", "--once")
    assert host.state()["state"] == "rebooting" and host.rebooted() == 1 and fleet.holder == "node-7"

    host.boot()
    host.bless()
    host.agent("run", "--once")
    assert host.state()["state"] == "idle" and fleet.holder is None
    events = [(r.event.value, r.version, r.from_version) for r in fleet.reports]
    assert events == [("downloading", "1.1", "1.0"), ("staged", "1.1", "1.0"),
                      ("rebooting", "1.1", "1.0"), ("blessed", "1.1", "1.0")]
    assert [r.seq for r in fleet.reports] == [1, 2, 3, 4]


def test_rollback_is_reported_and_told_to_the_fleet(host: Host, fleet: FakeServer) -> None:
    host.settings(server_url=fleet.url, node_id="node-8")
    fleet.offer = "1.1"
    host.agent("run", "--once")
    for _ in range(3):
        host.boot()
        host.fail_check()
    host.boot()
    host.agent("run", "--once")
    assert fleet.reports[-1].event.value == "rolled_back" and fleet.holder is None
    assert fleet.reports[-1].cause == RollbackCause.HEALTH_CHECK
    fleet.offer = None
    host.agent("run", "--once")
    assert fleet.checks[-1].bad_versions == ("1.1",)


def test_group_token_goes_with_every_request(host: Host, fleet: FakeServer) -> None:
    host.settings(server_url=fleet.url, node_id="node-9", fleet_token="s3cret")
    host.agent("run", "--once")
    assert fleet.authorizations and set(fleet.authorizations) == {"Bearer s3cret"}


def test_the_host_enrols_once_and_keeps_its_credential_private(host: Host, fleet: FakeServer) -> None:
    host.settings(server_url=fleet.url, group="canary", node_id="node-10")
    host.agent("run", "--once")
    host.agent("run", "--once")
    assert [(e.node_id, e.group) for e in fleet.enrolments] == [("node-10", "canary")]
    kept = host.state_dir / "host-credential"
    assert kept.read_text() == "cred-1" and kept.stat().st_mode & 0o777 == 0o600
    assert len(fleet.credentials) >= 2 and set(fleet.credentials) == {"cred-1"}


def test_over_https_the_agent_verifies_the_server_against_its_ca(
    host: Host, server: Any, tmp_path: Path
) -> None:
    """A real `berth serve` with a CA made for this run serves the fleet API and the repository."""
    config = write_config(tmp_path, {
        "repository": str(server.root / "repo"),
        "admin_token": "adm",
        "groups": {"default": {"waves": [{"after": "0s", "percent": 100}]}},
    })
    tls = make_server_tls(tmp_path)
    with running_server(config, f"sqlite:///{tmp_path / 'fleet.sqlite3'}", tls=tls) as fleet:
        host.settings(server_url=fleet.url, repo_url="", node_id="node-11")
        before = host.fingerprint()
        refused = host.agent("run", "--once")  # the system's CAs do not know this one
        assert "CERTIFICATE_VERIFY_FAILED" in refused.stderr and host.fingerprint() == before
        host.settings(server_ca=str(tls.ca))
        result = host.agent("run", "--once")
        # Offered, fetched over HTTPS, written, reported, and the reboot lock taken.
        assert host.state()["state"] == "rebooting" and host.rebooted() == 1, result.stderr
        history = requests.get(f"{fleet.url}/admin/hosts/node-11", verify=str(tls.ca), timeout=10,
                               headers={"Authorization": "Bearer adm"}).json()
        assert [r["event"] for r in history["reports"]] == ["downloading", "staged", "rebooting"]
        assert [e["event"] for e in history["events"]] == ["enrolled"]


def test_unreachable_fleet_changes_nothing(host: Host) -> None:
    host.settings(server_url="http://127.0.0.1:9")  # discard port: nothing listens
    before = host.fingerprint()
    result = host.agent("run", "--once")
    assert "fleet server" in result.stderr and host.fingerprint() == before
