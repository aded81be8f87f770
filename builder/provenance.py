"""What a build is made from, and the fixed values that make it reproducible.

Every value that would otherwise come from the clock or a random source is
derived here from the inputs: the time from the commit (SOURCE_DATE_EPOCH), the
UUIDs (repart's seed, ext4's hash seed, the ESP's volume id) from the image's
name. Two builds of one commit, in any checkout, get the same values.
The pure functions take what they read; the edges (git, mkosi) are at the end.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import os
import re
import subprocess
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from builder.settings import BuildSettings
from cli.errors import UserError
from updater import contract

_REPO = Path(__file__).resolve().parent.parent
# What mkosi builds from besides the settings: the image tree and berth's mkosi scripts.
IMAGE_TREES = (_REPO / "images", _REPO / "builder" / "mkosi")
# The uuid5 namespace of every identifier berth derives.
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://berth.invalid/reproducible")


@dataclass(frozen=True)
class Source:
    """The checkout a build comes from."""

    commit: str | None  # None: not a git checkout
    dirty: bool  # tracked files differ from the commit
    epoch: int  # SOURCE_DATE_EPOCH of the build


def seed(settings: BuildSettings) -> uuid.UUID:
    """systemd-repart's --seed: partition UUIDs, file-system UUIDs and the verity salt
    derive from it. One per image name and variant, so two versions' disks differ."""
    return uuid.uuid5(NAMESPACE, f"{settings.artifact_name}/{settings.engine}/{settings.fault}")


def derived_uuid(base: uuid.UUID, purpose: str) -> uuid.UUID:
    return uuid.uuid5(base, purpose)


def mkfs_environment(settings: BuildSettings, epoch: int) -> dict[str, str]:
    """Environment for systemd-repart's mkfs calls that repart 254 leaves random or
    clock-bound: ext4's directory hash seed and its times (e2fsprogs < 1.47.1 reads
    E2FSPROGS_FAKE_TIME, not SOURCE_DATE_EPOCH), vfat's label entry time (--invariant;
    it also fixes the volume id, so -i sets a derived one again after it)."""
    base = seed(settings)
    volume_id = derived_uuid(base, "esp-volume-id").hex[:8]
    return {
        "E2FSPROGS_FAKE_TIME": str(epoch),
        # mke2fs keeps the last -E only: repart's own extended options come again here.
        "SYSTEMD_REPART_MKFS_OPTIONS_EXT4": (
            f"-E lazy_itable_init=1,hash_seed={derived_uuid(base, 'ext4-hash-seed')}"
        ),
        "SYSTEMD_REPART_MKFS_OPTIONS_VFAT": f"--invariant -i {volume_id}",
    }


def epoch_from(environ: Mapping[str, str], commit_time: int | None) -> int:
    """SOURCE_DATE_EPOCH as the reproducible-builds spec has it: the environment's
    if set, else the commit's time."""
    given = environ.get("SOURCE_DATE_EPOCH")
    if given is not None:
        if not re.fullmatch(r"[0-9]{1,12}", given.strip()):
            raise UserError(f"SOURCE_DATE_EPOCH must be a UNIX time in seconds, got {given!r}")
        return int(given.strip())
    if commit_time is None:
        raise UserError(
            "not a git checkout, so no commit time to build from: set SOURCE_DATE_EPOCH"
        )
    return commit_time


def config_digest(files: Mapping[str, bytes]) -> str:
    """sha256 over the image's configuration files (relative path -> bytes), order-free."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()


def record(settings: BuildSettings, source: Source, package_lock_sha256: str) -> contract.Provenance:
    """The manifest's provenance: where the build came from and with what."""
    return contract.Provenance(
        commit=source.commit,
        dirty=source.dirty,
        source_date_epoch=source.epoch,
        mkosi_version=mkosi_version(),
        settings=dataclasses.asdict(settings),
        image_tree_sha256=config_digest(tree_files(IMAGE_TREES)),
        seed=str(seed(settings)),
        package_lock_sha256=package_lock_sha256,
    )


# I/O edges.


def tree_files(roots: Iterable[Path]) -> dict[str, bytes]:
    """Relative path -> bytes of every file under `roots` (relative to their parent)."""
    return {
        str(f.relative_to(root.parent)): f.read_bytes()
        for root in roots
        for f in sorted(root.rglob("*"))
        if f.is_file()
    }


def berth_version() -> str:
    try:
        return importlib.metadata.version("berth")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _git(repo: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def source(repo: Path) -> Source:
    commit = _git(repo, "rev-parse", "HEAD")
    time = _git(repo, "log", "-1", "--format=%ct", "HEAD") if commit else None
    status = _git(repo, "status", "--porcelain", "--untracked-files=no") if commit else None
    return Source(
        commit=commit,
        dirty=bool(status),
        epoch=epoch_from(os.environ, int(time) if time else None),
    )


def mkosi_version() -> str:
    try:
        out = subprocess.run(["mkosi", "--version"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip().removeprefix("mkosi ").strip()
