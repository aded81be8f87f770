"""Shared session fixtures: real images built once per test run and reused by
every area (builder checks, QEMU boots, end-to-end updates)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.imagebuilds import (
    SWITCHED_VERSION,
    ImageBuilder,
    Recipe,
    podman_recipe,
    scenario_release,
)

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
def image_builder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImageBuilder]:
    """The run's builds (tests/imagebuilds.py): each combination once, one at a time."""
    builder = ImageBuilder(tmp_path_factory)
    yield builder
    builder.close()


def _scenario_releases(request: pytest.FixtureRequest) -> tuple[Recipe, ...]:
    from qemu.lab import BAD_CHECK, BAD_PANIC, V2, V3

    return tuple(scenario_release(version) for version in (V2, V3, BAD_CHECK, BAD_PANIC))


# Which builds a fixture will ask for (by its name), so they can be queued ahead.
BUILDS_OF: dict[str, Callable[[pytest.FixtureRequest], tuple[Recipe, ...]]] = {
    "default_image": lambda request: (Recipe(),),
    "second_build": lambda request: (Recipe(again=True),),  # tests/builder/test_reproducible_build.py
    "podman_image": lambda request: (podman_recipe(request.getfixturevalue("rotating_keys")),),
    "release": _scenario_releases,  # tests/e2e: the scenarios' releases after the default image
    "switched_podman_image": lambda request: (
        podman_recipe(request.getfixturevalue("switched_keys"), SWITCHED_VERSION),),
}


@pytest.fixture(scope="session", autouse=True)
def builds_ahead(request: pytest.FixtureRequest) -> None:
    """Queue every build the selected tests will use, in the order they will use them, to
    be made at the lowest priority meanwhile (the unit tests, the VMs' idle stretches)."""
    wanted = [name for item in request.session.items for name in getattr(item, "fixturenames", ()) if name in BUILDS_OF]
    if wanted:
        builder: ImageBuilder = request.getfixturevalue("image_builder")
        for name in dict.fromkeys(wanted):
            for recipe in BUILDS_OF[name](request):
                builder.ahead(recipe)


@pytest.fixture(scope="session")
def default_image(image_builder: ImageBuilder) -> Path:
    """The default image (docker, version 1.0.0, unsigned): its artifact directory."""
    return image_builder.made(Recipe())


@pytest.fixture(scope="session")
def podman_image(image_builder: ImageBuilder, rotating_keys: Path) -> Path:
    """The podman variant (version 1.0.0), signed for Secure Boot with the run's db key
    (its host boots enforcing, tests/qemu) and a transition image of a db key rotation
    (``rotating_keys``: it carries db-next's certificate and append file), its UKI with a PCR
    11 policy signed by their PCR key and /var LUKS2 sealed to the TPM at first boot
    (var_encryption tpm2): its artifact directory."""
    return image_builder.made(podman_recipe(rotating_keys))


@pytest.fixture(scope="session")
def switched_podman_image(image_builder: ImageBuilder, switched_keys: Path) -> Path:
    """The podman variant's next release (SWITCHED_VERSION), signed by db-next alone
    (``switched_keys``): what the podman host updates to once its firmware trusts db-next."""
    return image_builder.made(podman_recipe(switched_keys, SWITCHED_VERSION))
