"""KVM-or-TCG: a real firmware boot decides, once, and the verdict is remembered."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qemu.accel import choose_accel, kvm_boots_firmware
from qemu.machine import Accel


@pytest.mark.slow
@pytest.mark.qemu
def test_probe_verdict_is_cached_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BERTH_CACHE", str(tmp_path))
    monkeypatch.delenv("BERTH_ACCEL", raising=False)
    expected = Accel.KVM if kvm_boots_firmware() else Accel.TCG
    assert choose_accel() is expected
    cached = json.loads((tmp_path / "accel.json").read_text())
    assert cached["accel"] == expected.value
    # A planted verdict for this very host is trusted without probing again.
    other = Accel.TCG if expected is Accel.KVM else Accel.KVM
    (tmp_path / "accel.json").write_text(json.dumps({**cached, "accel": other.value}))
    assert choose_accel() is other
    # A verdict for another host (QEMU, kernel or CPU) is not.
    (tmp_path / "accel.json").write_text(json.dumps({"key": "elsewhere", "accel": other.value}))
    assert choose_accel() is expected


def test_environment_overrides_the_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BERTH_CACHE", str(tmp_path))
    monkeypatch.setenv("BERTH_ACCEL", "tcg")
    assert choose_accel() is Accel.TCG
    assert not (tmp_path / "accel.json").exists()
