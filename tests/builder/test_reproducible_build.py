"""Two real builds of the same inputs: every artifact is the same bytes, the root file
system first; the real image's SBOM is valid SPDX and lists what manifest.json lists.
One extra build (about a minute, warm cache): the session's default image is the first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from builder import reproduce, sbom
from tests.imagebuilds import ImageBuilder, Recipe
from updater import contract

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def second_build(image_builder: ImageBuilder) -> Path:
    """The default image built once more from the same inputs (one extra warm build)."""
    return image_builder.made(Recipe(again=True))


def test_a_second_build_has_a_bit_for_bit_identical_root_file_system(
    default_image: Path, second_build: Path
) -> None:
    differences = reproduce.compare(default_image, second_build, [contract.ROOT_IMAGE])
    assert not differences, "\n\n".join(f"{d.name}:\n{d.where}" for d in differences)


def test_a_second_build_of_the_same_inputs_is_bit_for_bit_the_same(
    default_image: Path, second_build: Path
) -> None:
    names = contract.Manifest.from_json((default_image / contract.MANIFEST).read_text()).artifacts
    assert {
        "root.erofs",
        "root.verity",
        "uki.efi",
        "disk.raw",
        "disk.qcow2",
        sbom.FILE_NAME,
    } <= set(names)
    differences = reproduce.compare(default_image, second_build, sorted(names))
    assert not differences, "\n\n".join(f"{d.name}:\n{d.where}" for d in differences)
    first, second = (
        json.loads((d / "manifest.json").read_text()) for d in (default_image, second_build)
    )
    assert first["roothash"] == second["roothash"]
    assert first["artifacts"] == second["artifacts"]


def test_the_images_sbom_is_valid_spdx_of_its_packages(default_image: Path) -> None:
    manifest = json.loads((default_image / "manifest.json").read_text())
    document = parse_file(str(default_image / sbom.FILE_NAME))
    assert validate_full_spdx_document(document) == []
    debs = {p.name: p for p in document.packages if p.spdx_id.startswith("SPDXRef-Package-deb-")}
    assert {n: p.version for n, p in debs.items()} == {
        p["name"]: p["version"] for p in manifest["packages"]
    }
    assert "berth" in {p.name for p in document.packages}
    # mkosi's package cache holds every .deb of a build it just made.
    assert all(p.comment.startswith(sbom.DEB_COMMENT) for p in debs.values())
    # The one package berth cuts into says so: the kernel's modules are pruned in the root.
    pruned = sorted(n for n, p in debs.items() if p.comment != sbom.DEB_COMMENT)
    assert len(pruned) == 1 and pruned[0].startswith("linux-image-"), pruned
    assert "kernel modules" in debs[pruned[0]].comment and "depmod re-run" in debs[pruned[0]].comment
    assert str(debs["systemd"].license_declared).startswith("LGPL-2.1-or-later")
    assert manifest["provenance"]["mkosi_version"]
    assert manifest["artifacts"][sbom.FILE_NAME]["size"] > 0
