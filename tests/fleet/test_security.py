"""Attacks on `berth serve` over real HTTP(S), each refused with a clear 4xx that changes nothing.

The findings of issue 11 in order: a host spoken for by someone without its
credential, 500s on input, loose validation, and the transport (TLS, slow and
greedy clients). Run on SQLite and PostgreSQL where the store decides.
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from updater.client import FleetClient, FleetRejected, FleetUnavailable, LockDenied
from updater.fleet.ca import make_server_tls
from updater.fleet.launch import start_server
from updater.fleet.store import Store
from updater.wire import HOST_CREDENTIAL_HEADER, Report, ReportEvent

ADMIN = "admin-secret"  # the token make_fleet configures
HEADER = {"fleet-lock-protocol": "true"}
NOW_WAVE = [{"after": "0s", "percent": 100}]
# A protected group whose first rollback halts the release, beside an open one.
GROUPS = {
    "default": {"waves": NOW_WAVE},
    "guarded": {"token": "s3cret", "waves": NOW_WAVE, "halt": {"max_failure_share": 0.0}},
}
BOTH_DATABASES = pytest.mark.parametrize(
    "db", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


def post(fleet: Any, path: str, body: Any, headers: dict[str, str] | None = None) -> requests.Response:
    return requests.post(fleet.url + path, json=body, headers=headers or {}, timeout=30)


def report_body(node: str, group: str, seq: int, event: str) -> dict[str, Any]:
    return Report(node, group, seq, ReportEvent(event), "1.1.0", "1.0.0").to_json()


def records(fleet: Any, node: str) -> tuple[Any, ...]:
    """Everything the server holds about ``node`` and the guarded group, to prove nothing changed."""
    return (
        fleet.admin("GET", f"/admin/hosts/{node}").json(),
        fleet.admin("GET", "/admin/updates/guarded").json(),
        fleet.admin("GET", "/admin/locks/guarded").json(),
        fleet.status()["groups"],
    )


# --- finding 1: no one speaks for a host without its credential ---


@BOTH_DATABASES
def test_no_one_reports_checks_or_locks_for_a_host_without_its_credential(
    make_fleet: Any, db: str | None
) -> None:
    fleet = make_fleet(GROUPS, db=db)
    victim = fleet.client("victim", "guarded", token="s3cret")
    assert victim.check("1.0.0").target_version == "1.1.0"  # enrolled, counted update begun
    before = records(fleet, "victim")
    stolen = {HOST_CREDENTIAL_HEADER: "guess"}
    attempts = [
        # The attack that worked: a token-less report naming an open group.
        ("/v1/reports", report_body("victim", "default", 1, "failed"), {}),
        ("/v1/reports", report_body("victim", "guarded", 1, "failed"), {}),
        ("/v1/reports", report_body("victim", "guarded", 1, "failed"), stolen),
        ("/v1/reports", report_body("victim", "guarded", 1, "failed"),
         {"Authorization": "Bearer s3cret"}),
        ("/v1/update/check", {"node_id": "victim", "group": "default", "current_version": "1.0.0"},
         {}),
        ("/v1/pre-reboot", {"client_params": {"id": "victim", "group": "default"}}, HEADER),
        ("/v1/pre-reboot", {"client_params": {"id": "victim", "group": "guarded"}},
         {**HEADER, "Authorization": "Bearer s3cret"}),
        ("/v1/steady-state", {"client_params": {"id": "victim", "group": "guarded"}},
         {**HEADER, **stolen}),
    ]
    for path, body, headers in attempts:
        response = post(fleet, path, body, headers)
        assert response.status_code == 401, (path, body, headers, response.text)
        assert response.json()["kind"] == "unauthorized"
    # Enrolling again under the same id, even with the group's token, takes nothing over.
    again = post(fleet, "/v1/enrol", {"node_id": "victim", "group": "guarded"},
                 {"Authorization": "Bearer s3cret"})
    assert (again.status_code, again.json()["kind"]) == (409, "already_enrolled")
    assert records(fleet, "victim") == before
    # The host itself still reports, and its own credential is all it needs.
    fleet.finish_update("victim", ReportEvent.BLESSED, "guarded")
    assert fleet.admin("GET", "/admin/updates/guarded").json()["updates"][0]["outcome"] == "blessed"


@BOTH_DATABASES
def test_a_host_changes_group_only_by_an_admin_action_which_is_logged(
    make_fleet: Any, db: str | None
) -> None:
    fleet = make_fleet(GROUPS, db=db)
    fleet.client("h", "guarded", token="s3cret").check("1.0.0")
    # With its own credential, naming another group moves nothing either.
    with pytest.raises(FleetRejected) as refused:
        fleet.client("h", "default").check("1.0.0")
    assert (refused.value.status, refused.value.kind) == (409, "wrong_group")
    assert fleet.status()["groups"]["guarded"]["hosts_by_state"] == {"offered": 1}
    assert fleet.admin("POST", "/admin/hosts/h/move", {"group": "default"}, token=None).status_code == 401
    assert fleet.admin("POST", "/admin/hosts/h/move", {"group": "nope"}).status_code == 404
    assert fleet.admin("POST", "/admin/hosts/nobody/move", {"group": "default"}).status_code == 404
    moved = fleet.admin("POST", "/admin/hosts/h/move", {"group": "default"})
    assert moved.json() == {"node_id": "h", "group": "default", "was": "guarded"}
    assert fleet.client("h", "default").check("1.0.0").target_version == "1.1.0"
    history = fleet.admin("GET", "/admin/hosts/h").json()
    assert history["group"] == "default"
    assert [e["event"] for e in history["events"]] == ["enrolled", "moved"]
    assert history["events"][1]["detail"] == "from group guarded to default"


@BOTH_DATABASES
def test_a_moved_host_gives_back_its_reboot_lock_in_the_old_group(make_fleet: Any, db: str | None) -> None:
    fleet = make_fleet(GROUPS, db=db)
    mover, waiting = (fleet.client(name, "guarded", token="s3cret") for name in ("mover", "waiting"))
    for host in (mover, waiting):
        host.check("1.0.0")
    mover.pre_reboot()
    with pytest.raises(LockDenied):
        waiting.pre_reboot()  # the group's one reboot slot is the mover's
    fleet.admin("POST", "/admin/hosts/mover/move", {"group": "default"})
    waiting.pre_reboot()
    log = fleet.admin("GET", "/admin/locks/guarded").json()["events"]
    assert [(e["node_id"], e["event"]) for e in log] == [
        ("mover", "granted"), ("mover", "released"), ("waiting", "granted")]
    history = fleet.admin("GET", "/admin/hosts/mover").json()["events"]
    assert [e["event"] for e in history] == ["enrolled", "moved", "lock_released"]
    fleet.client("mover", "default").pre_reboot()  # in its new group, a slot of its own


def test_a_forgotten_host_enrols_again_and_its_old_credential_is_dead(make_fleet: Any) -> None:
    fleet = make_fleet(GROUPS)
    client = fleet.client("h")
    client.check("1.0.0")
    old = client.credential
    assert fleet.admin("POST", "/admin/hosts/h/forget").json()["forgotten"] is True
    # The client re-enrols by itself once the server says it no longer knows the node.
    client.check("1.0.0")
    assert client.credential not in (None, old)
    check = {"node_id": "h", "group": "default", "current_version": "1.0.0"}
    assert post(fleet, "/v1/update/check", check, {HOST_CREDENTIAL_HEADER: str(old)}).status_code == 401
    events = [e["event"] for e in fleet.admin("GET", "/admin/hosts/h").json()["events"]]
    assert events == ["enrolled", "forgotten", "enrolled"]


def test_enrolment_needs_the_groups_token_and_unknown_groups_look_the_same(make_fleet: Any) -> None:
    fleet = make_fleet(GROUPS)
    for group, headers in (("guarded", {}), ("guarded", {"Authorization": "Bearer no"}),
                           ("nope", {}), ("nope", {"Authorization": "Bearer s3cret"})):
        response = post(fleet, "/v1/enrol", {"node_id": "x", "group": group}, headers)
        assert (response.status_code, response.json()["kind"]) == (401, "unauthorized")
    unenrolled = post(fleet, "/v1/update/check",
                      {"node_id": "x", "group": "default", "current_version": "1.0.0"})
    assert (unenrolled.status_code, unenrolled.json()["kind"]) == (401, "not_enrolled")
    assert fleet.admin("GET", "/admin/hosts/x").json()["events"] == []


def test_plain_fleetlock_still_serves_never_enrolled_nodes_of_an_open_group(make_fleet: Any) -> None:
    """What an open group trusts: anyone may take or give back a slot for a node id no host enrolled."""
    fleet = make_fleet(GROUPS)
    body = {"client_params": {"id": "zincati-1", "group": "default"}}
    assert post(fleet, "/v1/pre-reboot", body, HEADER).status_code == 200
    assert post(fleet, "/v1/steady-state", body, HEADER).status_code == 200
    guarded = {"client_params": {"id": "zincati-2", "group": "guarded"}}
    assert post(fleet, "/v1/pre-reboot", guarded, HEADER).status_code == 401
    assert post(fleet, "/v1/pre-reboot", guarded,
                {**HEADER, "Authorization": "Bearer s3cret"}).status_code == 200


# --- findings 2 and 3: odd input and admin actions on nothing ---


@BOTH_DATABASES
def test_admin_actions_on_a_release_that_does_not_exist_are_404_and_write_nothing(
    make_fleet: Any, db: str | None
) -> None:
    fleet = make_fleet(GROUPS, db=db)
    for path in ("/admin/releases/berth/not-a-version/pause", "/admin/releases/berth/9.9.9/pause",
                 "/admin/releases/other/1.1.0/withdraw"):
        response = fleet.admin("POST", path)
        assert (response.status_code, response.json()["kind"]) == (404, "unknown_release")
    assert fleet.status()["releases"] == []
    assert fleet.admin("POST", "/admin/releases/berth/1.1.0/pause").status_code == 200


def test_the_test_clock_takes_no_infinity(make_fleet: Any) -> None:
    fleet = make_fleet(GROUPS)
    for data in (b'{"advance_s": 1e999}', b'{"advance_s": NaN}', b'{"advance_s": -1}'):
        response = requests.post(fleet.url + "/admin/clock", data=data, timeout=30,
                                 headers={"Authorization": f"Bearer {ADMIN}"})
        assert response.status_code == 400, data
    assert abs(fleet.status()["now"] - time.time()) < 60


@pytest.mark.parametrize(
    "path", ["/repo/metadata/%00", "/repo/metadata/a%00b.json", "/repo/" + "a" * 5000, "/nothing"]
)
def test_paths_no_file_can_have_are_a_json_404(make_fleet: Any, path: str) -> None:
    fleet = make_fleet(GROUPS)
    response = requests.get(fleet.url + path, timeout=30)
    assert response.status_code == 404 and response.json()["error"]


def test_a_database_of_schema_1_migrates_and_its_hosts_keep_their_group(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    Store(url).close()
    with sqlite3.connect(tmp_path / "old.sqlite3") as old:  # back to what schema 1 had
        old.execute("DROP TABLE identities")
        old.execute("DROP TABLE host_events")
        old.execute("DROP TABLE transfers")
        old.execute("DROP TABLE swarm_roles")
        old.execute("DROP TABLE swarm_tokens")
        old.execute("DELETE FROM meta")
        old.execute("INSERT INTO hosts VALUES ('legacy', 'guarded', '1.0.0', 'idle', NULL, 4, 0)")
    store = Store(url)
    assert store._one("SELECT value FROM meta WHERE key = 'schema_version'") == ("5",)
    assert store.transfers("legacy") == [] and store.swarm_managers("guarded") == frozenset()
    assert store.swarm_tokens("guarded") is None
    with pytest.raises(Exception, match="only an admin moves hosts"):
        store.enrol("legacy", "default", "0" * 64, 1.0)
    store.enrol("legacy", "guarded", "0" * 64, 1.0)
    assert store.identity("legacy") is not None and store.host("legacy").last_seq == 4  # type: ignore[union-attr]
    store.close()


# --- finding 5: TLS, slow and greedy clients ---


def test_https_with_a_private_ca_and_nothing_unverified(make_fleet: Any, tmp_path: Path) -> None:
    fleet = make_fleet(GROUPS, servers=0)
    server = start_server(fleet.config, fleet.db, tls=make_server_tls(tmp_path))
    fleet.servers.append(server)
    assert server.url.startswith("https://")
    assert fleet.client("h").check("1.0.0").target_version == "1.1.0"  # verify=<the CA>
    with pytest.raises(FleetUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        FleetClient(server.url, "h2", "default").check("1.0.0")  # the system's CAs
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url.replace("https", "http") + "/healthz", timeout=5)


def test_serve_wants_tls_or_an_explicit_insecure_http(berth: Any, make_fleet: Any) -> None:
    fleet = make_fleet(GROUPS, servers=0)
    result = berth("serve", "--config", str(fleet.config), "--port", "1")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "berth: error: give --tls-cert and --tls-key (HTTPS), or --insecure-http to serve plain HTTP"
    ]
    missing = berth("serve", "--config", str(fleet.config), "--tls-cert", "/no", "--tls-key", "/no")
    assert missing.returncode == 1 and "cannot load --tls-cert" in missing.stderr


def _trickle(port: int, count: int) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(b"POST /v1/update/check HTTP/1.1\r\nHost: x\r\n")
        sockets.append(sock)
    return sockets


def _closed(sock: socket.socket) -> bool:
    """The server closed ``sock``: a read gives EOF (or a reset)."""
    sock.settimeout(0.5)
    try:
        return sock.recv(1024) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def test_a_request_head_past_64_kib_closes_the_connection(make_fleet: Any) -> None:
    fleet = make_fleet(GROUPS)
    port = int(fleet.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        with contextlib.suppress(OSError):  # the server may close while we still send
            for _ in range(200):
                sock.sendall(b"X-Fill: " + b"a" * 1000 + b"\r\n")
        assert _closed(sock)
    assert requests.get(fleet.url + "/healthz", timeout=5).ok


def test_slowloris_connections_are_cut_and_capped(make_fleet: Any) -> None:
    fleet = make_fleet(GROUPS, request_timeout="2s", max_connections=20)
    port = int(fleet.url.rsplit(":", 1)[1])
    sockets = _trickle(port, 70)
    time.sleep(0.5)
    # Beyond the cap the server closes a connection at once.
    assert sum(_closed(s) for s in sockets) >= 50
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.sendall(b"X-Slow: 1\r\n")  # still trickling, never finishing the head
    time.sleep(3)
    assert all(_closed(s) for s in sockets)  # all cut by the request deadline
    for sock in sockets:
        sock.close()
    assert requests.get(fleet.url + "/healthz", timeout=5).ok  # and the server still serves


def test_one_address_enrols_at_most_enrol_rate_a_minute_and_is_told_when_to_try_again(
    make_fleet: Any,
) -> None:
    fleet = make_fleet(GROUPS, enrol_rate=3)
    for name in ("a", "b", "c"):
        fleet.client(name).check("1.0.0")
    flood = post(fleet, "/v1/enrol", {"node_id": "d", "group": "default"})
    assert (flood.status_code, flood.json()["kind"]) == (429, "too_many_requests")
    assert 1 <= int(flood.headers["Retry-After"]) <= 20  # a token comes back every 20 s
    with pytest.raises(FleetUnavailable):  # an agent takes it as "later", not as refused
        fleet.client("d").check("1.0.0")
    refused = fleet.admin("GET", "/admin/hosts/d").json()
    assert (refused["group"], refused["events"]) == (None, [])  # nothing was kept
    fleet.advance(20)
    assert fleet.client("d").check("1.0.0").target_version == "1.1.0"
