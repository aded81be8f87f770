"""manifest.json: what a build produced, hashed, and which packages went in."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Artifact:
    size: int
    sha256: str


def packages(mkosi_manifest: dict[str, Any], sizes_tsv: str) -> list[dict[str, Any]]:
    """The image's Debian packages: name and version from mkosi's manifest (recorded
    after package removal, before the database goes), installed size in bytes from
    the `package-sizes.tsv` mkosi.postinst writes."""
    sizes = {}
    for line in sizes_tsv.splitlines():
        name, _, kib = line.partition("\t")
        sizes[name] = int(kib or 0) * 1024
    found = [
        {"name": p["name"], "version": p["version"], "installed_size": sizes.get(p["name"], 0)}
        for p in mkosi_manifest.get("packages", [])
        if p.get("type") == "deb"
    ]
    return sorted(found, key=lambda p: p["name"])


def render(
    *,
    image_id: str,
    version: str,
    engine: str,
    roothash: str,
    slot_size: int,
    verity_slot_size: int,
    artifacts: dict[str, Artifact],
    packages: list[dict[str, Any]],
    provenance: dict[str, Any],
) -> str:
    document = {
        "image_id": image_id,
        "version": version,
        "engine": engine,
        "roothash": roothash,
        "slot_size": slot_size,
        "verity_slot_size": verity_slot_size,
        "artifacts": {
            name: {"size": a.size, "sha256": a.sha256} for name, a in sorted(artifacts.items())
        },
        "packages": packages,
        "provenance": provenance,
    }
    return json.dumps(document, indent=2) + "\n"
