"""`berth fleet simulate`: whole rollouts of simulated hosts against a real server, time compressed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

POLICY = Path(__file__).parent / "data" / "sim-policy.yaml"
ROOT = Path(__file__).resolve().parents[2]


def simulate(tmp_path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    out = tmp_path / "summary.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "fleet",
            "simulate",
            "--policy",
            str(POLICY),
            "--json",
            str(out),
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.exists(), result.stdout + result.stderr
    return result.returncode, json.loads(out.read_text())


@pytest.mark.slow
def test_ten_thousand_hosts_canary_then_prod_halted_by_injected_failures(tmp_path: Path) -> None:
    code, summary = simulate(
        tmp_path,
        "--hosts",
        "10000",
        "--split",
        "canary=100,prod=9900",
        "--releases",
        "1.1.0",
        "--fail",
        "1.1.0@prod=0.1",
        "--poll",
        "2h",
        "--tick",
        "30m",
    )
    assert summary["violations"] == [] and code == 0
    groups = summary["releases"]["1.1.0"]["groups"]
    assert groups["canary"]["on_release"] == 100 and groups["canary"]["halted_reason"] is None
    # prod began only after canary finished plus its soak, then the rollbacks stopped it early.
    assert groups["prod"]["started_at"] >= groups["canary"]["finished_at"] + 3600
    assert groups["prod"]["halted_reason"] is not None
    touched = groups["prod"]["on_release"] + groups["prod"]["rolled_back"]
    assert 0 < groups["prod"]["rolled_back"] and touched < 0.05 * 9900


@pytest.mark.slow
def test_two_releases_roll_out_to_every_host(tmp_path: Path) -> None:
    code, summary = simulate(
        tmp_path,
        "--hosts",
        "400",
        "--split",
        "canary=40,prod=360",
        "--releases",
        "1.1.0,1.2.0",
        "--poll",
        "1h",
        "--tick",
        "20m",
    )
    assert summary["violations"] == [] and code == 0
    for version in ("1.1.0", "1.2.0"):
        groups = summary["releases"][version]["groups"]
        assert groups["canary"]["on_release"] == 40 and groups["prod"]["on_release"] == 360
        assert groups["prod"]["finished_at"] is not None
