"""The Debian packages that went into a build, for its manifest.json
(updater.contract.Manifest)."""

from __future__ import annotations

from typing import Any

from updater.contract import Package


def packages(mkosi_manifest: dict[str, Any], sizes_tsv: str) -> tuple[Package, ...]:
    """The image's Debian packages: name and version from mkosi's manifest (recorded
    after package removal, before the database goes), installed size in bytes from
    the `package-sizes.tsv` mkosi.postinst writes."""
    sizes = {}
    for line in sizes_tsv.splitlines():
        name, _, kib = line.partition("\t")
        sizes[name] = int(kib or 0) * 1024
    found = [
        Package(p["name"], p["version"], sizes.get(p["name"], 0))
        for p in mkosi_manifest.get("packages", [])
        if p.get("type") == "deb"
    ]
    return tuple(sorted(found, key=lambda p: p.name))
