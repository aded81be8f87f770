"""The run's real `berth build`s: each combination once, one at a time, some ahead of need.

A build the run will ask for later is queued ahead (`ImageBuilder.ahead`) and made on
the one build thread at the lowest CPU priority (nice 19, which its mkosi and every
other child inherits), so it takes only the cores the booted VMs leave idle — a guest
waiting on its agent's next poll, a host hung until its watchdog fires — instead of
being made in a test's call while its VM idles. What the build makes is the same
`berth build` of the same settings either way; only when it happens moves.
Builds never overlap: they share mkosi's caches under $BERTH_CACHE.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

# Lowest priority for a build made ahead; one a test waits for runs at the usual 0.
AHEAD_NICE = 19
# The podman variant's release signed by the rotated Secure Boot key (tests/qemu).
SWITCHED_VERSION = "1.1.0"


@dataclass(frozen=True)
class Recipe:
    """What one build is made of (`berth build`'s settings the tests vary)."""

    version: str = "1.0.0"
    engine: str = "docker"
    fault: str = "none"
    secure_boot_keys: Path | None = None
    var_encryption: str = "none"
    again: bool = False  # a second, separate build of the same inputs (reproducibility)


def podman_recipe(keys: Path, version: str = "1.0.0") -> Recipe:
    """The podman variant, signed with ``keys`` and its /var sealed to the TPM (tpm2)."""
    return Recipe(version=version, engine="podman", secure_boot_keys=keys, var_encryption="tpm2")


def scenario_release(version: str) -> Recipe:
    """An e2e scenario's release: the default image at ``version``, with its fault if it has one."""
    from qemu.lab import FAULTS

    return Recipe(version=version, fault=FAULTS.get(version, "none"))


@dataclass
class _Job:
    recipe: Recipe
    nice: int
    future: Future[Path]


class ImageBuilder:
    """`made(Recipe(...))` -> the artifact directory `<out>/berth_<version>/` of a real
    `berth build` (signed for Secure Boot with the keys of that directory when given),
    each recipe built once per session."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp = tmp_path_factory
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="image-build")
        self._jobs: dict[Recipe, _Job] = {}
        self._lock = threading.Lock()

    def made(self, recipe: Recipe) -> Path:
        """The artifact directory of ``recipe``, waiting for its build (made now if not queued)."""
        job = self._queue(recipe, nice=0)
        job.nice = 0  # awaited: if it has not started yet, it starts at the usual priority
        return job.future.result()

    def ahead(self, recipe: Recipe) -> None:
        """Queue ``recipe``'s build now, to be made at the lowest priority before it is asked for."""
        self._queue(recipe, nice=AHEAD_NICE)

    def close(self) -> None:
        """Drop builds not started; wait for the one being made (its files are in the run's tmp)."""
        self._worker.shutdown(wait=True, cancel_futures=True)

    def _queue(self, recipe: Recipe, nice: int) -> _Job:
        with self._lock:
            if recipe not in self._jobs:
                future: Future[Path] = Future()
                job = _Job(recipe, nice, future)
                self._jobs[recipe] = job
                self._worker.submit(self._make, job)
            return self._jobs[recipe]

    def _make(self, job: _Job) -> None:
        if not job.future.set_running_or_notify_cancel():
            return
        try:
            # A thread's nice value is its own on Linux and what its children start with.
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), job.nice)
        except PermissionError:
            pass  # not allowed to raise it again: build at the priority it has
        try:
            job.future.set_result(self._build(job.recipe))
        except BaseException as error:  # noqa: BLE001 - handed to whoever asks for the image
            job.future.set_exception(error)

    def _build(self, recipe: Recipe) -> Path:
        from builder import settings
        from builder.build import build
        from builder.cli import DEFAULT_CONFIG

        chosen = settings.override(
            settings.load(DEFAULT_CONFIG), version=recipe.version, engine=recipe.engine, fault=recipe.fault,
            secure_boot_keys=str(recipe.secure_boot_keys) if recipe.secure_boot_keys else None,
            var_encryption=recipe.var_encryption,
        )
        name = "again" if recipe.again else f"image-{recipe.engine}-{recipe.version}"
        return build(chosen, self._tmp.mktemp(name), show=False)
