"""`berth fleet status` and `berth fleet plot` against a real server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from updater.wire import Report, ReportEvent


def test_status_and_plot_show_a_rollout(make_fleet: Any, berth: Any, tmp_path: Path) -> None:
    fleet = make_fleet(
        {
            "default": {
                "waves": [{"after": "0s", "percent": 100}],
                "max_concurrent_reboots": 2,
                "halt": {"max_failure_share": 0.3, "min_updates": 2},
            }
        }
    )
    for node, outcome in (("a", ReportEvent.BLESSED), ("b", ReportEvent.ROLLED_BACK)):
        client = fleet.client(node)
        assert client.check("1.0.0").target_version == "1.1.0"
        for seq, event in enumerate(
            (ReportEvent.DOWNLOADING, ReportEvent.STAGED, ReportEvent.REBOOTING), 1
        ):
            client.report(Report(node, "default", seq, event, "1.1.0", "1.0.0"))
        client.pre_reboot()
        client.report(Report(node, "default", 4, outcome, "1.1.0", "1.0.0"))
    fleet.client("a").steady_state()

    status = berth("fleet", "status", "--server", fleet.url, "--token", "admin-secret")
    assert status.returncode == 0, status.stderr
    assert "group default" in status.stdout
    assert "blessed 1, rolled_back 1" in status.stdout
    assert "rate used  2/100" in status.stdout
    assert "locks      1/2  (b)" in status.stdout
    assert "wave 100 %, HALTED: 1 of 2 updates failed or rolled back" in status.stdout

    png = tmp_path / "rollout.png"
    plot = berth(
        "fleet",
        "plot",
        "--server",
        fleet.url,
        "--token",
        "admin-secret",
        "--version",
        "1.1.0",
        "--output",
        str(png),
    )
    assert plot.returncode == 0, plot.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_status_errors_are_one_line(make_fleet: Any, berth: Any) -> None:
    fleet = make_fleet({"default": {}})
    wrong = berth("fleet", "status", "--server", fleet.url, "--token", "nope")
    assert wrong.returncode == 1
    assert wrong.stderr.strip().startswith("berth: error: /admin/status: HTTP 401")
    assert len(wrong.stderr.strip().splitlines()) == 1
    bad_config = berth("serve", "--config", "/nonexistent/fleet.yaml")
    assert bad_config.returncode == 1
    assert bad_config.stderr.startswith("berth: error: /nonexistent/fleet.yaml: cannot read")
    (fleet.workdir / "repo" / "metadata" / "targets.json").write_text("[]")
    bad_targets = berth("serve", "--config", str(fleet.config), "--port", "1")
    assert bad_targets.returncode == 1
    assert "targets.json: not a usable targets.json" in bad_targets.stderr


@pytest.mark.parametrize(
    "verb, empty",
    [
        ("locks", ["(no lock events recorded)", "most held at once: 0 of 1"]),
        (
            "updates",
            [
                "(no updates started)",
                "most started in any 1h: 0 of 100; most in flight at once: 0 of 100",
            ],
        ),
    ],
)
def test_group_logs_say_when_empty_and_errors_are_one_line(
    make_fleet: Any, berth: Any, verb: str, empty: list[str]
) -> None:
    fleet = make_fleet({"default": {}})
    token = ("--server", fleet.url, "--token", "admin-secret")
    assert berth("fleet", verb, "default", *token).stdout.splitlines()[2:] == empty
    unknown = berth("fleet", verb, "nope", *token)
    assert unknown.returncode == 1
    assert (
        unknown.stderr.strip() == f"berth: error: /admin/{verb}/nope: HTTP 404: unknown group 'nope'"
    )
