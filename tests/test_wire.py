"""The wire types reject what the server and agent must never act on."""

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from updater.version import Version, VersionError
from updater.wire import (
    MAX_SEQ,
    Enrolment,
    FleetLockError,
    FleetLockRequest,
    Report,
    ReportEvent,
    RollbackCause,
    Transfer,
    UpdateCheck,
    UpdateDecision,
    WireError,
)


def test_versions_order_numerically_and_ignore_trailing_zeros() -> None:
    assert Version.parse("1.10") > Version.parse("1.9")
    assert Version.parse("2") > Version.parse("1.99.99")
    assert Version.parse("1.2.0") == Version.parse("1.2")
    assert str(Version.parse("1.2.0")) == "1.2.0"


@pytest.mark.parametrize("text", ["", "v1", "1..2", "1.2.3.4.5", "1.-2", " 1", 12])
def test_malformed_versions_are_refused(text: object) -> None:
    with pytest.raises(VersionError, match="version must be dotted integers"):
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


def test_a_staged_report_carries_what_the_update_cost_on_the_wire() -> None:
    staged = Report("n", "g", 5, ReportEvent.STAGED, "1.1", "1.0", transfer=Transfer("delta", 1200, 209_000))
    assert staged.to_json()["transfer"] == {"path": "delta", "bytes_fetched": 1200, "bytes_full": 209_000}
    assert Report.from_json(staged.to_json()) == staged
    assert "transfer" not in Report("n", "g", 3, ReportEvent.BLESSED, "1.1", "1.0").to_json()
    for bad, message in (({"path": "teleport", "bytes_fetched": 1, "bytes_full": 2}, "transfer.path"),
                         ({"path": "full", "bytes_fetched": -1, "bytes_full": 2}, "byte counts"),
                         ({"path": "full", "bytes_fetched": True, "bytes_full": 2}, "bytes_fetched"),
                         ({"path": "full", "bytes_full": 2}, "bytes_fetched"),
                         ({"path": "full", "bytes_fetched": 1, "bytes_full": 2, "x": 1}, "unknown"),
                         ([], "transfer")):
        with pytest.raises(WireError, match=message):
            Report.from_json({**staged.to_json(), "transfer": bad})


# --- arbitrary JSON: every validator answers with a value or a WireError, nothing else ---

_SCALARS = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=12)
    | st.sampled_from(["1.0.0", "1.1", "node-1", "default", "blessed", "n9\n", "1" * 5000,
                       str(2**63), "", "a/../b"])
)
_KEYS = st.sampled_from(["node_id", "group", "current_version", "image_id", "bad_versions", "seq",
                         "event", "version", "from_version", "detail", "extra", "client_params",
                         "id", "target_version", "reason", "poll_after_s", "kind", "value",
                         "transfer", "path", "bytes_fetched"]) | st.text(max_size=6)
JSON = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(_KEYS, inner, max_size=8), max_leaves=24)
TYPES = (UpdateCheck, UpdateDecision, FleetLockRequest, FleetLockError, Report, Enrolment)


# Nearly valid messages, so the property reaches past the first check.
PLAUSIBLE = st.fixed_dictionaries({
    "node_id": st.sampled_from(["n1", "n9\n", "a" * 129, "x.y:z-1"]),
    "group": st.sampled_from(["default", "g\n", ""]),
    "current_version": st.sampled_from(["1.0.0", "1" * 10, "1.2.3.4.5", "01.2"]),
    "seq": st.one_of(st.integers(), st.just(MAX_SEQ), st.just(MAX_SEQ + 1), st.booleans()),
    "event": st.sampled_from(["blessed", "failed", "boom"]),
    "version": st.sampled_from(["1.1.0", "9" * 9, "9" * 10 + ".0"]),
    "from_version": st.just("1.0.0"),
    "bad_versions": st.lists(st.sampled_from(["1.1", "x", "1" * 5000]), max_size=3),
}, optional={"extra": JSON, "detail": JSON, "transfer": JSON})


@settings(max_examples=400, deadline=None)
@given(data=JSON | PLAUSIBLE)
def test_validators_take_any_json_and_answer_a_value_or_a_wire_error(data: Any) -> None:
    for kind in TYPES:
        try:
            value = kind.from_json(data)
        except WireError:
            continue
        # What a validator accepts is well inside every bound, and survives a round trip.
        assert kind.from_json(value.to_json()) == value
        for name in ("node_id", "group", "image_id"):
            text = getattr(value, name, None)
            if text is not None:
                assert "\n" not in text and 0 < len(text) <= 128
        if isinstance(value, Report):
            assert 0 <= value.seq <= MAX_SEQ
        for version in (getattr(value, "current_version", None), getattr(value, "version", None),
                        *getattr(value, "bad_versions", ())):
            if version:
                assert all(part < 10**9 for part in Version.parse(version).key)


def test_a_check_carries_its_versions_parsed() -> None:
    from updater.version import Version
    from updater.wire import UpdateCheck

    check = UpdateCheck.from_json({"node_id": "n", "group": "g", "current_version": "1.2",
                                   "bad_versions": ["1.3.0", "1.3"]})
    assert check.current == Version.parse("1.2.0") and check.refused == {Version.parse("1.3")}
    assert check == UpdateCheck("n", "g", "1.2", bad_versions=("1.3.0", "1.3"))  # the parsed form is no field
