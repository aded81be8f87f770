"""Shared session fixtures: real images built once per test run and reused by
every area (builder checks, QEMU boots, end-to-end updates)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ImageBuilder = Callable[..., Path]

# What the image builds, VM disks and published releases of one whole run take
# at their peak (13.3 GiB measured: see the README), with half as much again to
# spare. Short of it, a run would die minutes in on ENOSPC errors naming no cause.
SLOW_RUN_NEEDS_GIB = 20

# The run's budget (printed at its end): when it began, and what tests marked qemu took.
_RUN_STARTED = time.monotonic()
_qemu_test_seconds: list[float] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # setup + call + teardown: session fixtures boot their VMs in a test's setup.
    if "qemu" in report.keywords:
        _qemu_test_seconds.append(report.duration)


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:.0f} s"


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Every run ends with its wall time and the share QEMU took of it."""
    from qemu import budget

    wall = time.monotonic() - _RUN_STARTED
    vm = budget.vm_seconds()
    marked = sum(_qemu_test_seconds)
    terminalreporter.write_sep("=", "time budget")
    share = 100 / max(wall, 1e-9)
    terminalreporter.write_line(
        f"wall time {_minutes(wall)}; a VM running {_minutes(vm)} ({vm * share:.0f} %); tests marked "
        f"qemu {_minutes(marked)} ({marked * share:.0f} %, with the builds in their setup)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not any(item.get_closest_marker("slow") for item in items):
        return
    cache = Path(os.environ.get("BERTH_CACHE", Path.home() / ".cache" / "berth"))
    cache.mkdir(parents=True, exist_ok=True)
    scratch = Path(config.option.basetemp or os.environ.get("TMPDIR", "/tmp")).absolute()
    while not scratch.exists():
        scratch = scratch.parent
    free = {str(path): shutil.disk_usage(path).free for path in (scratch, cache)}
    short = {path: bytes_ for path, bytes_ in free.items() if bytes_ < SLOW_RUN_NEEDS_GIB << 30}
    if short:
        shown = ", ".join(
            f"{path}: {bytes_ / (1 << 30):.1f} GiB free" for path, bytes_ in short.items()
        )
        pytest.exit(
            f"the image and QEMU tests need about {SLOW_RUN_NEEDS_GIB} GiB free ({shown}); "
            "free some space, point TMPDIR or --basetemp elsewhere, or run -m 'not slow'",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )


@pytest.fixture(scope="session")
def secure_boot_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A key directory with PK, KEK and db, made once per run as an operator makes it
    (`berth keys init`, well under a second): what the signed images are signed with."""
    keys = tmp_path_factory.mktemp("sb-keys") / "keys"
    _berth_keys("init", "--keys", str(keys))
    return keys


def _berth_keys(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "cli.main", "keys", *args],
                   cwd=Path(__file__).resolve().parents[1], check=True, capture_output=True)


@pytest.fixture(scope="session")
def rotating_keys(secure_boot_keys: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run's keys, copied, in the first step of a db key rotation (`berth keys rotate-db`):
    db still signs, and the images they make carry db-next's certificate and its KEK-signed
    append file (transition images). The run's own key directory stays as it was."""
    keys = tmp_path_factory.mktemp("sb-rotating") / "keys"
    shutil.copytree(secure_boot_keys, keys)
    _berth_keys("rotate-db", "--keys", str(keys))
    return keys


@pytest.fixture(scope="session")
def switched_keys(rotating_keys: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``rotating_keys`` copied and switched (`berth keys rotate-db --switch`): db-next signs."""
    keys = tmp_path_factory.mktemp("sb-switched") / "keys"
    shutil.copytree(rotating_keys, keys)
    _berth_keys("rotate-db", "--keys", str(keys), "--switch")
    return keys


@pytest.fixture(scope="session")
def image_builder(tmp_path_factory: pytest.TempPathFactory) -> ImageBuilder:
    """`image_builder(version="1.0.0", engine="docker", fault="none", secure_boot_keys=None,
    var_encryption="none")`
    -> the artifact directory `<out>/berth_<version>/` of a real `berth build` (signed for
    Secure Boot with the keys of that directory when given); each combination is built once
    per session (mkosi's caches under $BERTH_CACHE keep rebuilds warm)."""
    from builder import settings
    from builder.build import build
    from builder.cli import DEFAULT_CONFIG

    built: dict[tuple[str, str, str, Path | None, str], Path] = {}

    def make(version: str = "1.0.0", engine: str = "docker", fault: str = "none",
             secure_boot_keys: Path | None = None, var_encryption: str = "none") -> Path:
        key = (version, engine, fault, secure_boot_keys, var_encryption)
        if key not in built:
            chosen = settings.override(
                settings.load(DEFAULT_CONFIG), version=version, engine=engine, fault=fault,
                secure_boot_keys=str(secure_boot_keys) if secure_boot_keys else None,
                var_encryption=var_encryption,
            )
            output = tmp_path_factory.mktemp(f"image-{engine}-{version}")
            built[key] = build(chosen, output, show=False)
        return built[key]

    return make


@pytest.fixture(scope="session")
def default_image(image_builder: ImageBuilder) -> Path:
    """The default image (docker, version 1.0.0, unsigned): its artifact directory."""
    return image_builder()


@pytest.fixture(scope="session")
def podman_image(image_builder: ImageBuilder, rotating_keys: Path) -> Path:
    """The podman variant (version 1.0.0), signed for Secure Boot with the run's db key
    (its host boots enforcing, tests/qemu) and a transition image of a db key rotation
    (``rotating_keys``: it carries db-next's certificate and append file), its UKI with a PCR
    11 policy signed by their PCR key and /var LUKS2 sealed to the TPM at first boot
    (var_encryption tpm2): its artifact directory."""
    return image_builder(engine="podman", secure_boot_keys=rotating_keys, var_encryption="tpm2")
