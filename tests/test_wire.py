"""The wire types reject what the server and agent must never act on."""

import pytest

from updater.wire import (
    FleetLockRequest,
    Report,
    ReportEvent,
    RollbackCause,
    UpdateCheck,
    UpdateDecision,
    Version,
    WireError,
)


def test_versions_order_numerically_and_ignore_trailing_zeros() -> None:
    assert Version.parse("1.10") > Version.parse("1.9")
    assert Version.parse("2") > Version.parse("1.99.99")
    assert Version.parse("1.2.0") == Version.parse("1.2")
    assert str(Version.parse("1.2.0")) == "1.2.0"


@pytest.mark.parametrize("text", ["", "v1", "1..2", "1.2.3.4.5", "1.-2", " 1", 12])
def test_malformed_versions_are_refused(text: object) -> None:
    with pytest.raises(WireError):
        Version.parse(text)  # type: ignore[arg-type]


def test_update_check_round_trips() -> None:
    check = UpdateCheck("node-1", "canary", "1.0.0", bad_versions=("1.1.0",))
    assert UpdateCheck.from_json(check.to_json()) == check


@pytest.mark.parametrize(
    "body, message",
    [
        ([], "JSON object"),
        ({"group": "g", "current_version": "1"}, "node_id"),
        ({"node_id": "n", "group": "g", "current_version": 1}, "current_version"),
        ({"node_id": "n/../x", "group": "g", "current_version": "1"}, "node_id"),
        ({"node_id": "n", "group": "g", "current_version": "1", "extra": 1}, "unknown"),
        ({"node_id": "n", "group": "g", "current_version": "1", "bad_versions": [3]}, "bad_versions"),
    ],
)
def test_update_check_errors_name_the_field(body: object, message: str) -> None:
    with pytest.raises(WireError, match=message):
        UpdateCheck.from_json(body)  # type: ignore[arg-type]


def test_decision_without_target_is_valid() -> None:
    decision = UpdateDecision.from_json({"target_version": None, "reason": "halted"})
    assert decision.target_version is None and decision.poll_after_s == 300


def test_fleetlock_body_matches_protocol() -> None:
    body = {"client_params": {"id": "node-1", "group": "default"}}
    assert FleetLockRequest.from_json(body).to_json() == body
    with pytest.raises(WireError):
        FleetLockRequest.from_json({"client_params": {"id": "node-1"}})


def test_report_rejects_unknown_event_and_negative_seq() -> None:
    good = Report("n", "g", 3, ReportEvent.BLESSED, "1.1", "1.0")
    assert Report.from_json(good.to_json()) == good
    with pytest.raises(WireError, match="event"):
        Report.from_json({**good.to_json(), "event": "exploded"})
    with pytest.raises(WireError, match="seq"):
        Report.from_json({**good.to_json(), "seq": -1})
    with pytest.raises(WireError, match="seq"):
        Report.from_json({**good.to_json(), "seq": True})


def test_a_rollback_report_carries_its_cause() -> None:
    back = Report("n", "g", 4, ReportEvent.ROLLED_BACK, "1.1", "1.0", "fell back", cause=RollbackCause.KERNEL_PANIC)
    assert back.to_json()["cause"] == "kernel-panic"
    assert Report.from_json(back.to_json()) == back
    assert "cause" not in Report("n", "g", 3, ReportEvent.BLESSED, "1.1", "1.0").to_json()
    with pytest.raises(WireError, match="cause"):
        Report.from_json({**back.to_json(), "cause": "gremlins"})
