"""The release repository on the build side: TUF metadata signed with python-tuf.

`berth keys init` makes one key set (root, targets, snapshot, timestamp, each
with its threshold of ed25519 keys); `berth publish` adds a built release as
three targets (release.py's layout), withdraws one, or re-signs the timestamp.
The repository uses consistent snapshots: metadata as <version>.<role>.json and
targets as <sha256>.<name>, so a static server never serves a mixed state.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.errors import UserError
from updater import contract
from updater.atomic import atomic_write
from updater.blockindex import BLOCK, blob_path, delta_custom, digest_blocks, index_path
from updater.release import (
    MAX_WINDOW_LOG,
    SBOM_CUSTOM_KEY,
    TARGET_COMPRESSION,
    ArtifactRole,
    Release,
    ReleaseArtifact,
    release_custom,
    releases_from_targets,
    sbom_target_path,
    stored_target_path,
    target_path,
)
from updater.version import Version, VersionError
from updater.wire import is_name

if TYPE_CHECKING:
    from tuf.api.metadata import TargetFile

ROLES = ("root", "targets", "snapshot", "timestamp")
EXPIRY_DAYS = {"root": 365, "targets": 90, "snapshot": 30, "timestamp": 1}
# Input bytes per zstd frame: the agent can resume a download at any frame boundary.
FRAME_BYTES = 8 << 20
# What `berth publish` sends by default: zstd -19 costs minutes of the publisher's CPU
# once per release and saves every host ~20 MB (README, image figures; bench/compression.py).
ZSTD_LEVEL = 19
# Under the key directory: a rotation's new keys until it is done, and the keys it replaced.
ROTATING, RETIRED = "rotating", "retired"
# The build's file (updater.contract's artifact names) behind each target of a release.
BUILD_FILES = {ArtifactRole.ROOT: contract.ROOT_IMAGE, ArtifactRole.VERITY: contract.VERITY_IMAGE,
               ArtifactRole.UKI: contract.UKI}
_BLOCK = 4 << 20
# What a host can build by delta from what it runs: both slot images from its booted slot,
# the UKI from its booted UKI on the ESP.
DELTA_ROLES = (ArtifactRole.ROOT, ArtifactRole.VERITY, ArtifactRole.UKI)
# roothash= words on the UKI's command line (contract.Manifest checks the manifest's own).
_CMDLINE_ROOTHASH = re.compile(rb"roothash=([0-9A-Za-z]*)")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def init_keys(keys_dir: Path, thresholds: dict[str, int]) -> None:
    """Make ``thresholds[role]`` ed25519 keys per role in ``keys_dir`` (private, mode 0600)."""
    if (keys_dir / "keys.json").exists():
        raise UserError(f"{keys_dir}: already holds keys (keys.json); refusing to replace them")
    keys_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(keys_dir, 0o700)
    for role in ROLES:
        make_keys(keys_dir, role, thresholds[role])
    atomic_write(keys_dir / "keys.json", json.dumps({"thresholds": thresholds}, indent=1).encode())


def make_keys(directory: Path, role: str, count: int) -> None:
    """``count`` new ed25519 private keys ``<role>-<n>.pem`` in ``directory`` (mode 0600)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    for index in range(count):
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        atomic_write(directory / f"{role}-{index}.pem", pem, mode=0o600)


def load_signers(directory: Path, role: str) -> list[Any]:
    """The signers of the keys ``<role>-*.pem`` in ``directory``, in name order."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from securesystemslib.signer import CryptoSigner

    return [CryptoSigner(load_pem_private_key(p.read_bytes(), None)) for p in sorted(directory.glob(f"{role}-*.pem"))]


class Repository:
    """A TUF repository directory (metadata/ and targets/) and the keys that sign it."""

    def __init__(self, repo_dir: Path, keys_dir: Path, now: Callable[[], datetime] | None = None,
                 rotating: bool = False) -> None:
        self.repo_dir, self.keys_dir = repo_dir, keys_dir
        if not rotating and (keys_dir / ROTATING).exists():
            # The root may already name the new keys: signing with the old ones now
            # would publish metadata every client refuses.
            raise UserError(f"{keys_dir}: a key rotation was cut short; run `berth keys rotate` again"
                            " (same --role) to finish it")
        self.metadata_dir = repo_dir / "metadata"
        self.targets_dir = repo_dir / "targets"
        self.now = now or (lambda: datetime.now(UTC))
        keys_file = keys_dir / "keys.json"
        if not keys_file.is_file():
            raise UserError(f"{keys_dir}: no keys.json; run `berth keys init --keys {keys_dir}` first")
        self.thresholds: dict[str, int] = json.loads(keys_file.read_text())["thresholds"]
        self.signers = {role: self._load_signers(role) for role in ROLES}

    def _load_signers(self, role: str) -> list[Any]:
        signers = load_signers(self.keys_dir, role)
        if len(signers) < self.thresholds[role]:
            raise UserError(f"{self.keys_dir}: {len(signers)} {role} key(s), threshold {self.thresholds[role]}")
        return signers

    # ---- metadata files --------------------------------------------------------------

    def expiry(self, role: str, days: int | None = None) -> datetime:
        return (self.now() + timedelta(days=EXPIRY_DAYS[role] if days is None else days)).replace(microsecond=0)

    def write(self, role: str, md: Any, signers: list[Any] | None = None) -> None:
        from tuf.api.serialization.json import JSONSerializer

        md.signatures.clear()
        for signer in self.signers[role] if signers is None else signers:
            md.sign(signer, append=True)
        data = md.to_bytes(JSONSerializer(compact=False))
        if role == "timestamp":
            atomic_write(self.metadata_dir / "timestamp.json", data)
            return
        atomic_write(self.metadata_dir / f"{md.signed.version}.{role}.json", data)
        if role == "root":
            atomic_write(self.metadata_dir / "root.json", data)

    def load(self, role: str) -> Any:
        from tuf.api.metadata import Metadata

        if role == "timestamp":
            return Metadata.from_file(str(self.metadata_dir / "timestamp.json"))
        versions = [int(p.name.split(".")[0]) for p in self.metadata_dir.glob(f"*.{role}.json")]
        return Metadata.from_file(str(self.metadata_dir / f"{max(versions)}.{role}.json"))

    def create(self) -> None:
        """The first root/targets/snapshot/timestamp of an empty repository."""
        from tuf.api.metadata import Metadata, Root, Targets

        root = Root(expires=self.expiry("root"), consistent_snapshot=True)
        for role in ROLES:
            for signer in self.signers[role]:
                root.add_key(signer.public_key, role)
            root.roles[role].threshold = self.thresholds[role]
        self.write("root", Metadata(root))
        self.write("targets", Metadata(Targets(expires=self.expiry("targets"))))
        self.commit(first=True)

    def commit(self, first: bool = False, timestamp_days: int | None = None) -> None:
        """Point a new snapshot at the newest targets and a new timestamp at that snapshot."""
        from tuf.api.metadata import Metadata, MetaFile, Snapshot

        if first:
            snapshot = Metadata(Snapshot(expires=self.expiry("snapshot")))
        else:
            snapshot = self.load("snapshot")
            snapshot.signed.version += 1
        snapshot.signed.meta["targets.json"] = MetaFile(version=self.load("targets").signed.version)
        snapshot.signed.expires = self.expiry("snapshot")
        self.write("snapshot", snapshot)
        self.refresh_timestamp(timestamp_days, first=first)
        # The fleet server reads releases from the unversioned copy; written last, it
        # never names targets the signed timestamp does not lead to yet.
        targets = self.metadata_dir / f"{snapshot.signed.meta['targets.json'].version}.targets.json"
        atomic_write(self.metadata_dir / "targets.json", targets.read_bytes())

    def refresh_timestamp(self, days: int | None = None, first: bool = False) -> None:
        """Re-sign the timestamp (expiring ``days`` from now): run it more often than it expires."""
        from tuf.api.metadata import Metadata, MetaFile, Timestamp

        _check_days(days)
        if not first and not (self.metadata_dir / "timestamp.json").is_file():
            raise UserError(f"{self.repo_dir}: no repository here yet (publish a release first)")
        if first:
            timestamp = Metadata(Timestamp(expires=self.expiry("timestamp")))
        else:
            timestamp = self.load("timestamp")
            timestamp.signed.version += 1
        timestamp.signed.snapshot_meta = MetaFile(version=self.load("snapshot").signed.version)
        timestamp.signed.expires = self.expiry("timestamp", days)
        self.write("timestamp", timestamp)

    def update_targets(self, change: Callable[[Any], None], timestamp_days: int | None) -> None:
        targets = self.load("targets")
        change(targets.signed)
        targets.signed.version += 1
        targets.signed.expires = self.expiry("targets")
        self.write("targets", targets)
        self.commit(timestamp_days=timestamp_days)

    def releases(self) -> list[Release]:
        return releases_from_targets(self.load("targets").signed.to_dict())

    # ---- releases ----------------------------------------------------------------------

    def publish(self, artifact_dir: Path, min_version: str | None, timestamp_days: int | None = None,
                frame_bytes: int = FRAME_BYTES, progress: Callable[[str], None] = lambda _: None,
                delta: bool = True, zstd_level: int = ZSTD_LEVEL) -> Release:
        """Sign the release in ``artifact_dir``; ``delta``: with the block indexes and blobs that
        let hosts build it from their booted slot (without them every host downloads it whole)."""
        from tuf.api.metadata import TargetFile

        # Every check comes before the first write: a refused publish leaves the
        # repository (or its absence) byte-for-byte as it was.
        _check_days(timestamp_days)
        if frame_bytes < 1:
            raise UserError(f"frame size must be at least one byte, got {frame_bytes}")
        _check_level(zstd_level)
        manifest = _read_manifest(artifact_dir)
        image_id, version = manifest.image_id, manifest.version
        exists = (self.metadata_dir / "timestamp.json").exists()
        published = [r for r in self.releases() if r.image_id == image_id] if exists else []
        if any(r.version == version for r in published):
            raise UserError(f"{image_id} {version} is already published in {self.repo_dir}")
        newest = max(published, key=lambda r: r.sort_key, default=None)
        if newest is not None and manifest.parsed_version <= newest.sort_key:
            raise UserError(
                f"{image_id} {version} is not newer than {newest.version}, the newest published"
                f" in {self.repo_dir}: agents never take it (versions only grow)"
            )
        if min_version is not None:
            _version_or_error(min_version, "--min-version")
        has_sbom = (artifact_dir / contract.SBOM).is_file()
        for name in [*BUILD_FILES.values(), *([contract.SBOM] if has_sbom else [])]:
            progress(f"checking {name}")
            listed = manifest.artifacts.get(name)
            if listed is None or listed.sha256 != _sha256(artifact_dir / name):
                raise UserError(f"{artifact_dir / name}: sha256 differs from {contract.MANIFEST}")
        if not exists:
            self.create()
        artifacts = {}
        for role, name in BUILD_FILES.items():
            progress(f"adding {name}")
            artifacts[role] = self._store_target(artifact_dir / name, target_path(image_id, version, role),
                                                 role, manifest, frame_bytes, zstd_level)
        sbom = self._store_sbom(artifact_dir / contract.SBOM, image_id, version, progress) if has_sbom else None
        indexes = [self._store_index(artifact_dir / BUILD_FILES[role], artifacts[role], image_id, version, progress)
                   for role in (DELTA_ROLES if delta else ())]
        release = Release(
            image_id=image_id, version=version, roothash=manifest.roothash,
            slot_size=manifest.slot_size, verity_slot_size=manifest.verity_slot_size,
            min_version=min_version, withdrawn=False, artifacts=artifacts,
        )

        def add(signed: Any) -> None:
            for role, artifact in artifacts.items():
                signed.targets[artifact.target_path] = TargetFile(
                    length=artifact.length, hashes={"sha256": artifact.sha256},
                    path=artifact.target_path, unrecognized_fields={"custom": release_custom(release, role)},
                )
            if sbom is not None:
                signed.targets[sbom.path] = sbom
            for index in indexes:
                signed.targets[index.path] = index

        progress("signing")
        self.update_targets(add, timestamp_days)
        return release

    def _store_target(self, source: Path, path: str, role: ArtifactRole, manifest: contract.Manifest,
                      frame_bytes: int, zstd_level: int) -> ReleaseArtifact:
        installed_sha256 = manifest.artifacts[source.name].sha256
        compression = TARGET_COMPRESSION[role]
        sha256, length = self._store_file(source, path, compression, frame_bytes, zstd_level)
        return ReleaseArtifact(role, path, length, sha256, compression, source.stat().st_size, installed_sha256)

    def _store_file(self, source: Path, path: str, compression: str, frame_bytes: int,
                    zstd_level: int = ZSTD_LEVEL) -> tuple[str, int]:
        """Write ``source`` as the target ``path`` (consistent-snapshot name); its sha256 and length."""
        directory, _, name = path.rpartition("/")
        (self.targets_dir / directory).mkdir(parents=True, exist_ok=True)
        temp = self.targets_dir / directory / f".{name}.partial"
        if compression == "zstd":
            compress_frames(source, temp, frame_bytes, zstd_level)
        else:
            shutil.copyfile(source, temp)
        with open(temp, "rb+") as handle:
            os.fsync(handle.fileno())
        sha256, length = _sha256(temp), temp.stat().st_size
        os.replace(temp, self.targets_dir / stored_target_path(path, sha256))
        return sha256, length

    def _store_index(self, source: Path, artifact: ReleaseArtifact, image_id: str, version: str,
                     progress: Callable[[str], None]) -> TargetFile:
        """A slot artifact's block index as a signed target, and the artifact uncompressed beside
        it as the blob hosts read ranges of (updater/blockindex.py)."""
        from tuf.api.metadata import TargetFile

        progress(f"indexing {source.name}")
        fd = os.open(source, os.O_RDONLY)
        try:
            index = digest_blocks(fd, 0, artifact.installed_size)
        finally:
            os.close(fd)
        if index.sha256 != artifact.installed_sha256:
            raise UserError(f"{source}: changed while it was published")
        blob = blob_path(artifact.target_path)
        if artifact.compression != "none":  # else the target is its own blob
            _copy_sparse(source, self.targets_dir / stored_target_path(blob, artifact.installed_sha256))
        path, data = index_path(artifact.target_path), index.encode()
        sha256 = hashlib.sha256(data).hexdigest()
        atomic_write(self.targets_dir / stored_target_path(path, sha256), data)
        custom = delta_custom(image_id, version, artifact.role.value, blob)
        return TargetFile(length=len(data), hashes={"sha256": sha256}, path=path,
                          unrecognized_fields={"custom": custom})

    def _store_sbom(self, source: Path, image_id: str, version: str,
                    progress: Callable[[str], None]) -> TargetFile:
        """The root's SBOM as a signed target beside the release."""
        from tuf.api.metadata import TargetFile

        progress(f"adding {contract.SBOM}")
        path = sbom_target_path(image_id, version)
        sha256, length = self._store_file(source, path, "none", FRAME_BYTES)
        custom = {SBOM_CUSTOM_KEY: {"image_id": image_id, "version": version, "format": "SPDX-2.3"}}
        return TargetFile(length=length, hashes={"sha256": sha256}, path=path,
                          unrecognized_fields={"custom": custom})

    def withdraw(self, image_id: str, version: str, timestamp_days: int | None = None) -> None:
        _check_days(timestamp_days)
        if not (self.metadata_dir / "timestamp.json").is_file():
            raise UserError(f"{image_id} {version} is not published in {self.repo_dir}")
        found = [r for r in self.releases() if r.image_id == image_id and r.version == version]
        if not found:
            raise UserError(f"{image_id} {version} is not published in {self.repo_dir}")

        def mark(signed: Any) -> None:
            # The paths the release was signed with: older releases carry older target names.
            for artifact in found[0].artifacts.values():
                target = signed.targets[artifact.target_path]
                target.unrecognized_fields["custom"]["berth"]["withdrawn"] = True

        self.update_targets(mark, timestamp_days)


def _version_or_error(text: str, what: str) -> Version:
    try:
        return Version.parse(text)
    except VersionError as error:
        raise UserError(f"{what}: {error}") from None


def _check_days(days: int | None) -> None:
    if days is not None and days < 1:
        raise UserError(f"--timestamp-days must be at least 1 (a timestamp already expired is useless), got {days}")


def _read_manifest(artifact_dir: Path) -> contract.Manifest:
    path = artifact_dir / contract.MANIFEST
    if not path.is_file():
        raise UserError(f"{artifact_dir}: no {contract.MANIFEST} (not a `berth build` output directory)")
    try:
        manifest = contract.Manifest.from_json(path.read_text())
    except contract.ContractError as error:
        raise UserError(f"{path}: {error}") from None
    if not is_name(manifest.image_id):
        # It becomes a directory of the repository's targets: no path may hide in it.
        raise UserError(f"{path}: image_id must be a name like 'berth' (letters, digits, ._:-), "
                        f"got {manifest.image_id!r}")
    for name in BUILD_FILES.values():
        if not (artifact_dir / name).is_file():
            raise UserError(f"{artifact_dir}: missing {name}")
        if name not in manifest.artifacts:
            raise UserError(f"{path}: no entry for {name} in 'artifacts'")
    uki = artifact_dir / contract.UKI
    # The exact value, not a prefix of it: the kernel takes the whole roothash= word.
    if manifest.roothash not in {m.decode() for m in _CMDLINE_ROOTHASH.findall(uki.read_bytes())}:
        raise UserError(f"{uki}: its command line lacks roothash={manifest.roothash}")
    return manifest


def _copy_sparse(source: Path, destination: Path) -> None:
    """``source`` to ``destination`` (atomically), leaving holes for its zero blocks: a slot
    image is mostly zeros, and a repository keeps one blob per release."""
    temp = destination.with_name(f".{destination.name}.partial")
    with open(source, "rb") as reader, open(temp, "wb") as writer:
        while block := reader.read(BLOCK):
            if block.count(0) == len(block):
                writer.seek(len(block), os.SEEK_CUR)
            else:
                writer.write(block)
        writer.truncate()
        writer.flush()
        os.fsync(writer.fileno())
    os.replace(temp, destination)


def _check_level(level: int) -> None:
    import zstandard

    if not 1 <= level <= zstandard.MAX_COMPRESSION_LEVEL:
        raise UserError(f"zstd level must be 1..{zstandard.MAX_COMPRESSION_LEVEL}, got {level}")


def compress_frames(source: Path, destination: Path, frame_bytes: int, level: int = ZSTD_LEVEL) -> None:
    """zstd in independent frames of ``frame_bytes`` input each (plain `zstd -d` reads them too),
    compressed on every CPU at once; none needs a window over release.MAX_WINDOW_LOG."""
    import zstandard

    # The window is what a host must hold to decompress: never more than one frame's input
    # (zstd gives a frame no more than its content needs) nor than the agent allows.
    window_log = min(zstandard.ZstdCompressionParameters.from_level(level, source_size=frame_bytes).window_log,
                     MAX_WINDOW_LOG)
    params = zstandard.ZstdCompressionParameters.from_level(
        level, source_size=frame_bytes, window_log=window_log, write_checksum=1)
    local = threading.local()

    def compress(block: bytes) -> bytes:
        if not hasattr(local, "compressor"):  # a compressor is not shared between threads
            local.compressor = zstandard.ZstdCompressor(compression_params=params)
        return local.compressor.compress(block)

    workers = os.cpu_count() or 1
    with (open(source, "rb") as reader, open(destination, "wb") as writer,
          ThreadPoolExecutor(workers) as pool):
        pending: deque[Future[bytes]] = deque()
        # At most two frames per worker in memory; frames are written in order.
        while block := reader.read(frame_bytes):
            pending.append(pool.submit(compress, block))
            if len(pending) >= 2 * workers:
                writer.write(pending.popleft().result())
        while pending:
            writer.write(pending.popleft().result())
