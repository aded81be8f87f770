"""Test helpers for releases whose UKI is signed otherwise than berth signed it.

The Secure Boot tests forge on purpose: a UKI a stranger's db key signed, one with another
command line. Each starts from a UKI berth built, bare of its signature, and a release
whose manifest names the forged file's size and digest, so that only the signature
(or the one changed byte) tells it apart.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import subprocess
from pathlib import Path

from updater import contract


def unsigned_copy(uki: Path, target: Path) -> Path:
    """``uki`` copied to ``target`` with its Authenticode signature removed (sbattach)."""
    shutil.copyfile(uki, target)
    subprocess.run(["sbattach", "--remove", str(target)], check=True, capture_output=True)
    return target


def with_artifact(release: Path, name: str, **changes: str) -> contract.Manifest:
    """Rewrite ``release``'s manifest to vouch for its file ``name`` as it is now (size and
    sha256), with ``changes`` to the manifest's other fields (``version=...``)."""
    path = release / contract.MANIFEST
    built = contract.Manifest.from_json(path.read_text())
    data = (release / name).read_bytes()
    artifacts = {**built.artifacts, name: contract.Artifact(len(data), hashlib.sha256(data).hexdigest())}
    rewritten = dataclasses.replace(built, artifacts=artifacts, **changes)
    path.write_text(rewritten.to_json())
    return rewritten
