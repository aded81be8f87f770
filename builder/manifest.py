"""manifest.json: what a build produced, hashed, and which packages went in."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Artifact:
    size: int
    sha256: str


def packages_from_mkosi(mkosi_manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Debian packages (name, version, installed size in bytes) from mkosi's manifest,
    which mkosi records before the package database is removed."""
    found = [
        {"name": p["name"], "version": p["version"], "size": int(p.get("size", 0))}
        for p in mkosi_manifest.get("packages", [])
        if p.get("type") == "deb"
    ]
    return sorted(found, key=lambda p: p["name"])


def render(
    *, image_id: str, version: str, engine: str, roothash: str, slot_size: int,
    verity_slot_size: int, artifacts: dict[str, Artifact], packages: list[dict[str, Any]],
) -> str:
    document = {
        "image_id": image_id,
        "version": version,
        "engine": engine,
        "roothash": roothash,
        "slot_size": slot_size,
        "verity_slot_size": verity_slot_size,
        "artifacts": {name: {"size": a.size, "sha256": a.sha256} for name, a in sorted(artifacts.items())},
        "packages": packages,
    }
    return json.dumps(document, indent=2) + "\n"
