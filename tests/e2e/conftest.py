"""Releases for the end-to-end scenarios, each built once per session.

v1 is the session's default image (shared with the builder and QEMU tests);
the others are real `berth build`s of the same tree with another version or
a fault built in. Versions only grow, so one host can take them in order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from qemu.container_image import write_busybox_archive
from tests.imagebuilds import ImageBuilder, scenario_release


@pytest.fixture(scope="session")
def narrate() -> Callable[[str], None]:
    """The lab's narration, into the test log (shown with -o log_cli=true or on failure)."""
    return logging.getLogger("berth.e2e").info


@pytest.fixture(scope="session")
def release(image_builder: ImageBuilder) -> Callable[[str], Path]:
    """`release(version)` -> the artifact directory of that scenario release (queued ahead
    by tests/conftest.py's ``builds_ahead``)."""

    def get(version: str) -> Path:
        return image_builder.made(scenario_release(version))

    return get


@pytest.fixture(scope="session")
def app_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("app") / "busybox.tar"
    write_busybox_archive(path)
    return path
