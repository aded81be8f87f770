"""`berth serve` over real HTTP: FleetLock conformance, decisions, reports, admin, bad input."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from updater.client import FleetRejected, LockDenied
from updater.wire import Report, ReportEvent, RollbackCause, Transfer

HEADER = {"fleet-lock-protocol": "true"}
BOTH_DATABASES = pytest.mark.parametrize(
    "db", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


NOW_WAVE = [{"after": "0s", "percent": 100}]


def lock_body(node: str, group: str = "default") -> dict[str, Any]:
    return {"client_params": {"id": node, "group": group}}


def post(
    fleet: Any,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
) -> requests.Response:
    return requests.post(
        fleet.url + path,
        json=body if data is None else None,
        data=data,
        headers=headers or {},
        timeout=30,
    )


# --- FleetLock, from the protocol text ---


@BOTH_DATABASES
def test_fleetlock_semaphore_is_owned_re_entrant_and_low_cardinality(
    make_fleet: Any, db: str | None
) -> None:
    fleet = make_fleet({"default": {}}, db=db)
    first = post(fleet, "/v1/pre-reboot", lock_body("a"), HEADER)
    assert first.status_code == 200
    assert post(fleet, "/v1/pre-reboot", lock_body("a"), HEADER).status_code == 200  # recursive
    full = post(fleet, "/v1/pre-reboot", lock_body("b"), HEADER)
    assert full.status_code == 409
    assert set(full.json()) == {"kind", "value"}
    assert full.json()["kind"] == "failed_lock_semaphore_full"
    # UnlockIfHeld: a node that holds nothing gets success and changes nothing.
    assert post(fleet, "/v1/steady-state", lock_body("b"), HEADER).status_code == 200
    assert post(fleet, "/v1/pre-reboot", lock_body("b"), HEADER).status_code == 409
    assert post(fleet, "/v1/steady-state", lock_body("a"), HEADER).status_code == 200
    assert post(fleet, "/v1/pre-reboot", lock_body("b"), HEADER).status_code == 200
    assert fleet.status()["groups"]["default"]["locks_held"] == ["b"]


@pytest.mark.parametrize(
    ("headers", "body", "status", "kind"),
    [
        ({}, lock_body("a"), 400, "missing_header"),
        ({"fleet-lock-protocol": "false"}, lock_body("a"), 400, "missing_header"),
        (HEADER, {"id": "a", "group": "default"}, 400, "bad_request"),
        (HEADER, {"client_params": {"id": 7, "group": "default"}}, 400, "bad_request"),
        (HEADER, {"client_params": {"id": "a b", "group": "default"}}, 400, "bad_request"),
        # An unknown group answers like a wrong token: no one learns which groups exist.
        (HEADER, lock_body("a", "nope"), 401, "unauthorized"),
        (HEADER, {**lock_body("a"), "extra": 1}, 400, "bad_request"),
        (HEADER, {"client_params": {"id": "a", "group": "default", "x": 1}}, 400, "bad_request"),
        (HEADER, lock_body("a\n"), 400, "bad_request"),
        (HEADER, None, 400, "bad_request"),
    ],
)
def test_fleetlock_refusals_have_a_kind_and_change_nothing(
    make_fleet: Any, headers: dict[str, str], body: Any, status: int, kind: str
) -> None:
    fleet = make_fleet({"default": {}})
    for path in ("/v1/pre-reboot", "/v1/steady-state"):
        response = post(fleet, path, body, headers)
        assert (response.status_code, response.json()["kind"]) == (status, kind)
    assert fleet.status()["groups"]["default"]["locks_held"] == []


def test_fleetlock_malformed_json_is_bad_request(make_fleet: Any) -> None:
    fleet = make_fleet({"default": {}})
    response = post(
        fleet,
        "/v1/pre-reboot",
        headers={**HEADER, "content-type": "application/json"},
        data=b"{not json",
    )
    assert (response.status_code, response.json()["kind"]) == (400, "bad_request")


def test_unreleased_lock_expires_after_the_ttl(make_fleet: Any) -> None:
    fleet = make_fleet({"default": {"lock_ttl": "10m"}})
    fleet.client("a").pre_reboot()
    with pytest.raises(LockDenied) as denied:
        fleet.client("b").pre_reboot()
    assert denied.value.kind == "failed_lock_semaphore_full"
    fleet.advance(601)
    fleet.client("b").pre_reboot()
    assert fleet.status()["groups"]["default"]["locks_held"] == ["b"]


def test_group_token_guards_locks_decisions_and_reports(make_fleet: Any) -> None:
    fleet = make_fleet({"default": {"token": "s3cret", "waves": NOW_WAVE}})
    for call in (lambda c: c.pre_reboot(), lambda c: c.check("1.0.0")):
        with pytest.raises(FleetRejected) as refused:
            call(fleet.client("a", token="wrong"))
        assert refused.value.status == 401
    denied = post(fleet, "/v1/pre-reboot", lock_body("a"), HEADER)
    assert (denied.status_code, denied.json()["kind"]) == (401, "unauthorized")
    fleet.client("a", token="s3cret").pre_reboot()
    assert fleet.client("a", token="s3cret").check("1.0.0").target_version == "1.1.0"


def test_reboots_only_inside_the_maintenance_window(make_fleet: Any) -> None:
    opens = time.gmtime(time.time() + 2 * 3600)
    window = {"start": f"{opens.tm_hour:02d}:00", "duration": "2h"}
    fleet = make_fleet({"default": {"windows": [window], "waves": NOW_WAVE}})
    response = post(fleet, "/v1/pre-reboot", lock_body("a"), HEADER)
    assert (response.status_code, response.json()["kind"]) == (409, "failed_outside_window")
    assert fleet.client("a").check("1.0.0").reason == "outside_window"
    fleet.advance(2 * 3600)
    fleet.client("a").pre_reboot()
    assert fleet.client("b").check("1.0.0").target_version == "1.1.0"


# --- decisions ---


def test_up_to_date_hosts_get_nothing(make_fleet: Any) -> None:
    fleet = make_fleet({"default": {"waves": NOW_WAVE}})
    decision = fleet.client("a").check("1.1.0")
    assert (decision.target_version, decision.reason) == (None, "up_to_date")
    assert decision.poll_after_s == 300


def test_waves_open_over_time(make_fleet: Any) -> None:
    fleet = make_fleet({"default": {"waves": [{"after": "1h", "percent": 100}]}})
    assert fleet.client("a").check("1.0.0").reason == "waiting_for_wave"
    fleet.advance(3600)
    assert fleet.client("a").check("1.0.0").target_version == "1.1.0"


@BOTH_DATABASES
def test_rate_limit_counts_starts_per_period_and_repeats_are_not_counted(
    make_fleet: Any, db: str | None
) -> None:
    fleet = make_fleet(
        {"default": {"waves": NOW_WAVE, "rate": {"max_updates": 2, "period": "1h"}}}, db=db
    )
    assert [fleet.client(n).check("1.0.0").reason for n in "abc"] == [
        "offered",
        "offered",
        "rate_limited",
    ]
    again = fleet.client("a").check("1.0.0")
    assert (again.target_version, again.reason) == ("1.1.0", "in_progress")
    assert fleet.status()["groups"]["default"]["rate_used"] == 2
    fleet.advance(3601)
    # A new period, but a and b are still in flight: the in-flight cap still holds c back.
    assert fleet.client("c").check("1.0.0").reason == "rate_limited"
    _walk(fleet, "a", ReportEvent.BLESSED)
    assert fleet.client("c").check("1.0.0").reason == "offered"


def _walk(
    fleet: Any, node: str, outcome: ReportEvent, group: str = "default", start: int = 1
) -> None:
    client = fleet.client(node, group)
    events = (ReportEvent.DOWNLOADING, ReportEvent.STAGED, ReportEvent.REBOOTING, outcome)
    for seq, event in enumerate(events, start):
        client.report(Report(node, group, seq, event, "1.1.0", "1.0.0"))


@BOTH_DATABASES
def test_unexplained_rollbacks_halt_by_their_own_threshold(make_fleet: Any, db: str | None) -> None:
    halt = {"max_failure_share": 0.0, "min_updates": 1, "max_unexplained_share": 0.5}
    fleet = make_fleet({"default": {"waves": NOW_WAVE, "halt": halt}}, db=db)
    for node in "abc":
        assert fleet.client(node).check("1.0.0").reason == "offered"
    for node, cause in (("b", None), ("a", RollbackCause.UNEXPLAINED)):
        client = fleet.client(node)
        for seq, event in enumerate((ReportEvent.DOWNLOADING, ReportEvent.STAGED, ReportEvent.REBOOTING), 1):
            client.report(Report(node, "default", seq, event, "1.1.0", "1.0.0"))
        final = ReportEvent.ROLLED_BACK if cause else ReportEvent.BLESSED
        client.report(Report(node, "default", 4, final, "1.1.0", "1.0.0", cause=cause))
    # One power-cut rollback of two or three started is not over 50 %: not judged the release's fault.
    assert fleet.status()["groups"]["default"]["rollouts"][0]["halted_reason"] is None
    outcomes = {u["node_id"]: u["outcome"] for u in fleet.admin("GET", "/admin/updates/default").json()["updates"]}
    assert outcomes["a"] == "rolled_back_unexplained" and outcomes["b"] == "blessed"
    _walk(fleet, "c", ReportEvent.ROLLED_BACK)  # no cause: an older agent, counted as explained
    assert fleet.status()["groups"]["default"]["rollouts"][0]["halted_reason"] == (
        "1 of 3 updates failed or rolled back, 1 rolled back for no cause seen")


def test_bad_versions_and_withdrawn_releases_are_never_offered(make_fleet: Any) -> None:
    fleet = make_fleet({"default": {"waves": NOW_WAVE}}, releases=("1.1.0", "1.2.0"))
    assert fleet.client("a").check("1.0.0", bad_versions=["1.2.0"]).target_version == "1.1.0"
    fleet.publish("1.1.0", "1.2.0", withdrawn=("1.2.0",))
    assert fleet.client("b").check("1.0.0").target_version == "1.1.0"
    fleet.admin("POST", "/admin/releases/berth/1.1.0/withdraw").raise_for_status()
    # Not even the host that already started it is told to continue.
    assert fleet.client("a").check("1.0.0").target_version is None


@BOTH_DATABASES
def test_pause_resume_abort(make_fleet: Any, db: str | None) -> None:
    fleet = make_fleet({"default": {"waves": NOW_WAVE}}, db=db)
    fleet.admin("POST", "/admin/releases/berth/1.1.0/pause").raise_for_status()
    assert fleet.client("a").check("1.0.0").reason == "paused"
    assert fleet.admin("POST", "/admin/releases/berth/1.1.0/pause").status_code == 409
    fleet.admin("POST", "/admin/releases/berth/1.1.0/resume").raise_for_status()
    assert fleet.client("a").check("1.0.0").reason == "offered"
    fleet.admin("POST", "/admin/releases/berth/1.1.0/abort").raise_for_status()
    assert fleet.client("b").check("1.0.0").reason == "aborted"
    assert fleet.client("a").check("1.0.0").reason == "in_progress"  # started ones may finish


@BOTH_DATABASES
def test_prod_starts_after_canary_finished_plus_soak(make_fleet: Any, db: str | None) -> None:
    fleet = make_fleet(
        {
            "canary": {"waves": NOW_WAVE},
            "prod": {"waves": NOW_WAVE, "after": "canary", "soak": "1h"},
        },
        db=db,
    )
    assert fleet.client("c1", "canary").check("1.0.0").target_version == "1.1.0"
    assert fleet.client("p1", "prod").check("1.0.0").reason == "waiting_for_group"
    _walk(fleet, "c1", ReportEvent.BLESSED, "canary")
    assert fleet.client("p1", "prod").check("1.0.0").reason == "waiting_for_group"
    fleet.advance(3600)
    assert fleet.client("p1", "prod").check("1.0.0").target_version == "1.1.0"


@BOTH_DATABASES
def test_rollbacks_past_the_threshold_halt_the_release_in_the_group(
    make_fleet: Any, db: str | None
) -> None:
    fleet = make_fleet(
        {"default": {"waves": NOW_WAVE, "halt": {"max_failure_share": 0.4, "min_updates": 2}}},
        db=db,
    )
    for node in "ab":
        assert fleet.client(node).check("1.0.0").reason == "offered"
    _walk(fleet, "a", ReportEvent.BLESSED)
    _walk(fleet, "b", ReportEvent.ROLLED_BACK)
    assert fleet.client("c").check("1.0.0").reason == "halted"
    rollout = fleet.status()["groups"]["default"]["rollouts"][0]
    assert rollout["halted_reason"] == "1 of 2 updates failed or rolled back"
    assert (
        'berth_fleet_rollout_halted{group="default",version="1.1.0"} 1'
        in fleet.admin("GET", "/metrics").text
    )


# --- reports and bad input ---


@BOTH_DATABASES
def test_reports_keep_history_and_refuse_replays_and_out_of_order(
    make_fleet: Any, db: str | None
) -> None:
    fleet = make_fleet({"default": {"waves": NOW_WAVE}}, db=db)
    client = fleet.client("a")
    client.check("1.0.0")
    client.report(Report("a", "default", 5, ReportEvent.DOWNLOADING, "1.1.0", "1.0.0"))
    before = fleet.admin("GET", "/admin/hosts/a").json()
    for report in (
        Report("a", "default", 5, ReportEvent.STAGED, "1.1.0", "1.0.0"),  # replayed seq
        Report("a", "default", 4, ReportEvent.STAGED, "1.1.0", "1.0.0"),  # older seq
        Report("a", "default", 6, ReportEvent.BLESSED, "1.1.0", "1.0.0"),  # skips staged/rebooting
    ):
        with pytest.raises(FleetRejected) as refused:
            client.report(report)
        assert refused.value.status == 409
    assert fleet.admin("GET", "/admin/hosts/a").json() == before
    assert [r["event"] for r in before["reports"]] == ["downloading"]


@BOTH_DATABASES
def test_the_staged_report_s_transfer_is_kept_and_shown(make_fleet: Any, db: str | None) -> None:
    fleet = make_fleet({"default": {"waves": NOW_WAVE}}, db=db)
    client = fleet.client("a")
    client.check("1.0.0")
    client.report(Report("a", "default", 1, ReportEvent.DOWNLOADING, "1.1.0", "1.0.0"))
    client.report(Report("a", "default", 2, ReportEvent.STAGED, "1.1.0", "1.0.0",
                         transfer=Transfer("delta", 5_000_000, 209_000_000)))
    history = fleet.admin("GET", "/admin/hosts/a").json()
    assert history["transfers"] == [{"seq": 2, "version": "1.1.0", "path": "delta",
                                     "bytes_fetched": 5_000_000, "bytes_full": 209_000_000}]


BOTH = ("/v1/update/check", "/v1/reports")
GOOD_REPORT = (
    b'{"node_id": "a", "group": "default", "seq": 1, "event": "downloading",'
    b' "version": "1.1.0", "from_version": "1.0.0"}'
)
HUGE_VERSION = b"1" * 5000
UNKNOWN_GROUP_REPORT = (
    b'{"node_id": "a", "group": "nope", "seq": 1, "event": "downloading",'
    b' "version": "1.1.0", "from_version": "1.0.0"}'
)


@pytest.mark.parametrize(
    ("paths", "data", "status"),
    [
        (BOTH, b"{oops", 400),
        (BOTH, b"[]", 400),
        (BOTH, b'{"node_id": "a", "group": "default", "current_version": 1}', 400),
        (
            BOTH,
            b'{"node_id": "a", "group": "default", "current_version": "1.0.0", "extra": 1}',
            400,
        ),
        (BOTH, b'{"node_id": "' + b"a" * 200_000 + b'"}', 413),
        (
            ("/v1/update/check",),
            b'{"node_id": "a", "group": "nope", "current_version": "1.0.0"}',
            401,
        ),
        (("/v1/reports",), UNKNOWN_GROUP_REPORT, 401),
        (("/v1/reports",), UNKNOWN_GROUP_REPORT.replace(b'"seq": 1', b'"seq": -1'), 400),
        (("/v1/reports",), UNKNOWN_GROUP_REPORT.replace(b'"downloading"', b'"exploded"'), 400),
        (BOTH, b"[" * 60_000, 400),
        (BOTH + ("/v1/enrol",), b"null", 400),
        (BOTH + ("/v1/enrol",), b"NaN", 400),
        (("/v1/reports",), GOOD_REPORT.replace(b'"seq": 1', b'"seq": NaN'), 400),
        (("/v1/reports",), GOOD_REPORT.replace(b'"seq": 1', b'"seq": 9223372036854775808'), 400),
        (("/v1/reports",), GOOD_REPORT.replace(b'"1.1.0"', b'"' + HUGE_VERSION + b'"'), 400),
        (
            ("/v1/update/check",),
            b'{"node_id": "a", "group": "default", "current_version": "1.0.0",'
            b' "bad_versions": ["' + HUGE_VERSION + b'"]}',
            400,
        ),
        (
            ("/v1/update/check", "/v1/enrol"),
            b'{"node_id": "a\\n", "group": "default", "current_version": "1.0.0"}',
            400,
        ),
        (
            ("/v1/update/check",),
            b'{"node_id": "a", "group": "default", "current_version": "1.0.0\\n"}',
            400,
        ),
    ],
    ids=[
        "malformed",
        "not-an-object",
        "wrong-type",
        "unknown-field",
        "huge",
        "check-unknown-group",
        "report-unknown-group",
        "negative-seq",
        "unknown-event",
        "deeply-nested",
        "null-body",
        "nan-body",
        "nan-seq",
        "seq-past-int64",
        "version-past-python-int-limit",
        "bad-version-past-python-int-limit",
        "node-id-with-trailing-newline",
        "version-with-trailing-newline",
    ],
)
def test_bad_requests_get_a_clear_4xx_and_change_nothing(
    make_fleet: Any, paths: tuple[str, ...], data: bytes, status: int
) -> None:
    fleet = make_fleet({"default": {"waves": NOW_WAVE}})
    for path in paths:
        response = post(fleet, path, data=data, headers={"content-type": "application/json"})
        assert response.status_code == status
        assert response.json()["error"]
    assert fleet.status()["groups"]["default"]["hosts_by_state"] == {}


# --- operators and the rest of the surface ---


def test_admin_api_needs_the_token(make_fleet: Any) -> None:
    fleet = make_fleet({"default": {}})
    assert fleet.admin("GET", "/admin/status", token=None).status_code == 401
    assert (
        fleet.admin("POST", "/admin/releases/berth/1.1.0/pause", token="guess").status_code == 401
    )


def test_reload_with_a_broken_config_keeps_the_old_policies(make_fleet: Any) -> None:
    fleet = make_fleet({"default": {"waves": NOW_WAVE}})
    good = fleet.config.read_text()
    fleet.config.write_text(good.replace("default:", "default:\n    colour: blue"))
    response = fleet.admin("POST", "/admin/reload")
    assert response.status_code == 400 and "colour: unknown key" in response.json()["error"]
    assert fleet.client("a").check("1.0.0").target_version == "1.1.0"


def test_a_broken_targets_json_keeps_the_last_good_releases(make_fleet: Any) -> None:
    fleet = make_fleet({"default": {"waves": NOW_WAVE}})
    (fleet.workdir / "repo" / "metadata" / "targets.json").write_text('{"signed": 7}')
    response = fleet.admin("POST", "/admin/reload")
    assert response.status_code == 400 and "not a usable targets.json" in response.json()["error"]
    time.sleep(1.1)  # past the once-a-second freshness check, which must not break either
    assert fleet.client("a").check("1.0.0").target_version == "1.1.0"


def test_serves_the_repository_metrics_and_openapi(make_fleet: Any) -> None:
    fleet = make_fleet({"default": {}})
    targets = requests.get(fleet.url + "/repo/metadata/targets.json", timeout=10)
    assert (
        targets.status_code == 200 and "berth/1.1.0/uki.efi" in targets.json()["signed"]["targets"]
    )
    assert requests.get(fleet.url + "/repo/../fleet.yaml", timeout=10).status_code == 404
    schema = requests.get(fleet.url + "/openapi.json", timeout=10).json()
    assert {"/v1/update/check", "/v1/reports", "/v1/pre-reboot", "/v1/steady-state"} <= set(
        schema["paths"]
    )
    fleet.client("a").pre_reboot()
    metrics = fleet.admin("GET", "/metrics").text
    assert requests.get(fleet.url + "/metrics", timeout=10).status_code == 401
    assert 'berth_fleet_reboot_locks_held{group="default"} 1' in metrics


def test_clock_cannot_be_moved_without_the_test_flag(make_fleet: Any) -> None:
    from updater.fleet.launch import running_server

    fleet = make_fleet({"default": {}}, servers=0)
    with running_server(fleet.config, fleet.db) as server:
        response = fleet.admin("POST", "/admin/clock", {"advance_s": 60}, url=server.url)
        assert response.status_code == 404


def test_client_errors_are_typed_when_nobody_answers() -> None:
    from updater.client import FleetClient, FleetUnavailable
    from updater.fleet.launch import free_port

    client = FleetClient(f"http://127.0.0.1:{free_port()}", "a", "default", timeout=(1, 1))
    for call in (
        lambda: client.check("1.0.0"),
        client.pre_reboot,
        client.steady_state,
        lambda: client.report(Report("a", "default", 1, ReportEvent.FAILED, "1.1.0", "1.0.0")),
    ):
        with pytest.raises(FleetUnavailable):
            call()
