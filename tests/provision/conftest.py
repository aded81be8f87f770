"""Seeds for the provisioning tests: real ISO 9660 images made by genisoimage."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from qemu.seed import write_seed

SeedMaker = Callable[..., Path]


@pytest.fixture
def make_seed(tmp_path: Path) -> SeedMaker:
    """``make_seed(user_data, label="cidata", extra={name: bytes})`` -> the ISO's path."""
    def make(user_data: str, label: str = "cidata", extra: dict[str, bytes] | None = None,
             meta_data: str = "instance-id: iid-seed-1\nlocal-hostname: seeded\n") -> Path:
        path = tmp_path / f"seed-{label}.iso"
        write_seed(path, user_data.encode(), meta_data.encode(), extra or {}, label=label)
        return path
    return make


def config_drive(path: Path, meta_json: str, user_data: str) -> Path:
    """An OpenStack config drive (label config-2) with openstack/latest/{meta_data.json,user_data}."""
    tree = path.parent / "config-drive"
    latest = tree / "openstack" / "latest"
    latest.mkdir(parents=True)
    (latest / "meta_data.json").write_text(meta_json)
    (latest / "user_data").write_text(user_data)
    subprocess.run(["genisoimage", "-quiet", "-output", str(path), "-volid", "config-2", "-joliet", "-rock",
                    str(tree)], check=True)
    return path
