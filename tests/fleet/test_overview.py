"""The status document (updater.fleet.overview) as a pure function of the store's figures."""

from __future__ import annotations

from pathlib import Path

from updater.fleet.documents import ReleaseStatus
from updater.fleet.overview import GroupFigures, StatusView, status_document
from updater.fleet.policy import ReleaseState
from updater.fleet.records import RolloutRow
from updater.fleet.settings import parse_settings
from updater.fleet.synthetic import synthetic_release


def test_status_document_renders_the_figures_and_judges_the_wave() -> None:
    policy = parse_settings(
        {"groups": {"g": {"waves": [{"after": "0s", "percent": 10}, {"after": "1h", "percent": 50}, {"after": "2h", "percent": 100}],
                          "rate": {"max_updates": 3, "period": "1h"}}}},
        Path("."),
    ).groups["g"]
    figures = GroupFigures(
        policy,
        hosts_by_state=[("idle", 2), ("blessed", 1)],
        hosts_by_version=[("1.0.0", 2), ("1.1.0", 1)],
        locks_held=["a"],
        rate_used=1,
        rollouts={"1.1.0": RolloutRow(1000.0, None, None), "1.2.0": RolloutRow(4600.0, None, "x")},
    )
    view = StatusView(4600.0, [figures], [ReleaseStatus("berth", "1.2.0", ReleaseState.PAUSED)])
    document = status_document(view, [synthetic_release("1.1.0")]).to_json()
    group = document["groups"]["g"]
    assert group["hosts_by_state"] == {"idle": 2, "blessed": 1}
    assert group["hosts_by_version"] == {"1.0.0": 2, "1.1.0": 1}
    assert (group["locks_held"], group["rate_used"], group["rate_limit"]) == (["a"], 1, 3)
    assert group["max_concurrent_reboots"] == policy.max_concurrent_reboots
    assert [r["wave_percent"] for r in group["rollouts"]] == [50.0, 10.0]
    assert group["rollouts"][1]["halted_reason"] == "x"
    assert document["now"] == 4600.0
    assert document["releases"] == [{"image_id": "berth", "version": "1.2.0", "state": "paused"}]
    assert document["catalog"] == [{"image_id": "berth", "version": "1.1.0", "withdrawn": False}]
