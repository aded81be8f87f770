"""Synthetic releases in a repository's targets.json, for the simulator, tests and bench.

The fleet server reads only the ``signed`` section of metadata/targets.json
(the agent, not the server, verifies signatures), so a simulated fleet needs no
keys and no images: this writes the same target names and berth custom
metadata `berth publish` does, with made-up hashes and sizes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from updater.release import (
    TARGET_COMPRESSION,
    ArtifactRole,
    Release,
    ReleaseArtifact,
    release_custom,
    target_path,
)


def synthetic_release(version: str, *, image_id: str = "berth", withdrawn: bool = False) -> Release:
    def digest(role: ArtifactRole, kind: str) -> str:
        return hashlib.sha256(f"{image_id}/{version}/{role}/{kind}".encode()).hexdigest()

    artifacts = {
        role: ReleaseArtifact(
            role,
            target_path(image_id, version, role),
            1 << 20,
            digest(role, "wire"),
            TARGET_COMPRESSION[role],
            2 << 20,
            digest(role, "installed"),
        )
        for role in ArtifactRole
    }
    return Release(
        image_id,
        version,
        digest(ArtifactRole.ROOT, "roothash"),
        1 << 30,
        1 << 26,
        None,
        withdrawn,
        artifacts,
    )


def write_targets(repository: Path, releases: Iterable[Release]) -> None:
    """Atomically replace repository/metadata/targets.json with these releases."""
    targets = {}
    for release in releases:
        for role, artifact in release.artifacts.items():
            targets[artifact.target_path] = {
                "length": artifact.length,
                "hashes": {"sha256": artifact.sha256},
                "custom": release_custom(release, role),
            }
    path = repository / "metadata" / "targets.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"signed": {"_type": "targets", "targets": targets}}))
    os.replace(temporary, path)
