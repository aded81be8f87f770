"""Shared session fixtures: real images built once per test run and reused by
every area (builder checks, QEMU boots, end-to-end updates)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

ImageBuilder = Callable[..., Path]


@pytest.fixture(scope="session")
def image_builder(tmp_path_factory: pytest.TempPathFactory) -> ImageBuilder:
    """`image_builder(version="1.0.0", engine="docker", fault="none")` -> the artifact
    directory `<out>/berth_<version>/` of a real `berth build`; each (version, engine,
    fault) is built once per session (mkosi's caches under $BERTH_CACHE keep rebuilds warm)."""
    from builder import settings
    from builder.build import build
    from builder.cli import DEFAULT_CONFIG

    built: dict[tuple[str, str, str], Path] = {}

    def make(version: str = "1.0.0", engine: str = "docker", fault: str = "none") -> Path:
        key = (version, engine, fault)
        if key not in built:
            chosen = settings.override(
                settings.load(DEFAULT_CONFIG), version=version, engine=engine, fault=fault
            )
            output = tmp_path_factory.mktemp(f"image-{engine}-{version}")
            built[key] = build(chosen, output, show=False)
        return built[key]

    return make


@pytest.fixture(scope="session")
def default_image(image_builder: ImageBuilder) -> Path:
    """The default image (docker, version 1.0.0): its artifact directory."""
    return image_builder()


@pytest.fixture(scope="session")
def podman_image(image_builder: ImageBuilder) -> Path:
    """The podman variant (version 1.0.0): its artifact directory."""
    return image_builder(engine="podman")
