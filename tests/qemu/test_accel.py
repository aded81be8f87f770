"""KVM-or-TCG: a real firmware boot decides, once, and the verdict is remembered."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import qemu.accel
from qemu.accel import choose_accel
from qemu.machine import Accel


@pytest.mark.slow
@pytest.mark.qemu
def test_probe_verdict_is_cached_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BERTH_CACHE", str(tmp_path))
    monkeypatch.delenv("BERTH_ACCEL", raising=False)
    real_probe = qemu.accel.kvm_boots_firmware
    verdicts: list[bool] = []

    def probe(binary: str = "qemu-system-x86_64") -> bool:
        verdicts.append(real_probe(binary))
        return verdicts[-1]

    # One real probe (up to PROBE_SECONDS of firmware boot); the spy only counts it.
    monkeypatch.setattr(qemu.accel, "kvm_boots_firmware", probe)
    expected = choose_accel()
    assert verdicts and expected is (Accel.KVM if verdicts[0] else Accel.TCG)
    cached = json.loads((tmp_path / "accel.json").read_text())
    assert cached["accel"] == expected.value
    # A planted verdict for this very host is trusted without probing again.
    other = Accel.TCG if expected is Accel.KVM else Accel.KVM
    (tmp_path / "accel.json").write_text(json.dumps({**cached, "accel": other.value}))
    assert choose_accel() is other
    assert len(verdicts) == 1
    # A verdict for another host (QEMU, kernel or CPU) is not: it probes again. The
    # second probe is answered without booting; the first one proved the real path.
    def same_answer(binary: str = "qemu-system-x86_64") -> bool:
        verdicts.append(verdicts[0])
        return verdicts[0]

    monkeypatch.setattr(qemu.accel, "kvm_boots_firmware", same_answer)
    (tmp_path / "accel.json").write_text(json.dumps({"key": "elsewhere", "accel": other.value}))
    assert choose_accel() is expected
    assert len(verdicts) == 2
    assert json.loads((tmp_path / "accel.json").read_text()) == cached


def test_environment_overrides_the_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BERTH_CACHE", str(tmp_path))
    monkeypatch.setenv("BERTH_ACCEL", "tcg")
    assert choose_accel() is Accel.TCG
    assert not (tmp_path / "accel.json").exists()
