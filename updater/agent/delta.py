"""Write a slot artifact by delta when that pays, else by the full download (writer.py).

The delta path: the signed block index of the new artifact (a TUF target), the
booted slot hashed block by block and checked whole against the booted release's
signed installed sha256, a plan (deltaplan.py), then the partition assembled
front to back from zeros, booted-slot blocks and HTTP ranges of the server's
blob, each block checked against the index before it is written. The agent
reads the partition back against the signed sha256 afterwards, as for a full
download.

Which path an artifact took is decided once and saved (``transfer-<role>.json``
in the state directory) before its first byte is written; the writer's
progress checkpoints in the state file then say how far it got, so a restart
after a power cut continues on the same path from the last checkpoint. The
delta path's Progress counts blob bytes fetched as its wire offset.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from updater.agent.boundaries import SignedRepository
from updater.agent.deltaplan import Op, Plan, Source, delta_worth_it, plan_within
from updater.agent.host import Booted
from updater.agent.journal import log
from updater.agent.statefile import atomic_write
from updater.agent.updatestate import Progress
from updater.agent.writer import Sink, WriteError, write_artifact
from updater.blockindex import (
    BLOCK,
    BadIndex,
    BlockIndex,
    blob_path,
    digest_blocks,
    index_path,
    pread_exactly,
)
from updater.failpoint import durable
from updater.gpt import Partition
from updater.release import ArtifactRole, Release, ReleaseArtifact
from updater.wire import Transfer

FULL, DELTA = "full", "delta"
# Bytes written between progress checkpoints on the delta path: each is an fsync and an
# atomic state write; a cut costs at most this much written again.
CHECKPOINT_BYTES = 16 << 20


class Refused(Exception):
    """A piece does not match the signed index: nothing of it was written."""


@dataclass(frozen=True)
class BootedSlot:
    """The booted slot's partition for one role and the signed artifact it should hold."""

    part: Partition
    artifact: ReleaseArtifact | None  # None: the booted release is not in the repository


@dataclass(frozen=True)
class Decision:
    version: str
    path: str  # FULL or DELTA
    index_length: int  # wire bytes of the index (DELTA)
    why: str
    fetched: int | None = None  # wire bytes it took, once the artifact is written
    requests: int | None = None  # DELTA: HTTP range requests the plan makes (None: saved before they were counted)

    def to_json(self) -> bytes:
        return json.dumps(vars(self)).encode()


def _decision_file(state_dir: Path, role: ArtifactRole) -> Path:
    return state_dir / f"transfer-{role.value}.json"


def saved_decision(state_dir: Path, role: ArtifactRole, version: str) -> Decision | None:
    path = _decision_file(state_dir, role)
    try:
        decision = Decision(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return decision if decision.version == version else None


def write_slot_artifact(
    disk: str, part: Partition, release: Release, role: ArtifactRole, repo: SignedRepository, booted: BootedSlot,
    progress: Progress, save: Callable[[Progress], None], tick: Callable[[int], None], state_dir: Path,
) -> None:
    """Write ``release``'s ``role`` artifact into ``part``: by delta from ``booted`` when the
    server offers an index, the booted slot verifies and the delta is small enough."""
    artifact = release.artifacts[role]
    started = progress.wire_offset > 0 or progress.installed_offset > 0
    decision = saved_decision(state_dir, role, release.version)
    if started and (decision is None or decision.path == FULL):
        return _full(disk, part, artifact, repo, progress, save, tick)  # resume the full download
    if started and progress.installed_offset >= artifact.installed_size:
        assert decision is not None
        return _finish(state_dir, role, decision, progress)
    prepared = _prepare(disk, artifact, repo, booted, tick)
    if isinstance(prepared, str):
        if started:
            log("warning", f"{artifact.target_path}: delta cannot resume ({prepared}); downloading it whole")
            progress = Progress()
            save(progress)
        _decide(state_dir, role, Decision(release.version, FULL, 0, prepared, artifact.length))
        return _full(disk, part, artifact, repo, progress, save, tick)
    index, steps, index_length = prepared
    if decision is None or not started:
        decision = Decision(release.version, DELTA, index_length,
                            f"fetching {steps.fetch_bytes} of {index.size} bytes in {steps.requests} requests",
                            requests=steps.requests)
        _decide(state_dir, role, decision)
    try:
        done = assemble(disk, part, artifact, index, steps, _reader(disk, booted.part),
                        _blob_ranges(repo, artifact), progress, save, tick)
        _finish(state_dir, role, decision, done)
    except Refused as error:
        log("warning", f"{artifact.target_path}: {error}; downloading it whole")
        # Progress first: a full download must never resume from a delta's checkpoint.
        progress = Progress()
        save(progress)
        _decide(state_dir, role, Decision(release.version, FULL, 0, str(error), artifact.length))
        _full(disk, part, artifact, repo, progress, save, tick)
    return None


def booted_artifact(releases: list[Release], booted: Booted, role: ArtifactRole) -> ReleaseArtifact | None:
    """The signed artifact the booted slot holds for ``role`` (its release, found by root hash)."""
    for release in releases:
        if (release.image_id, release.sort_key, release.roothash) == (booted.image_id, booted.version,
                                                                      booted.roothash):
            return release.artifacts[role]
    return None


def _finish(state_dir: Path, role: ArtifactRole, decision: Decision, done: Progress) -> None:
    """Record what the delta fetched (index and ranges) for the staged report."""
    fetched = decision.index_length + done.wire_offset
    if decision.fetched != fetched:
        atomic_write(_decision_file(state_dir, role), replace(decision, fetched=fetched).to_json())


def _decide(state_dir: Path, role: ArtifactRole, decision: Decision) -> None:
    log("info", f"{role.value}: {decision.path} path ({decision.why})", role=role.value, path=decision.path)
    atomic_write(_decision_file(state_dir, role), decision.to_json())


def _full(disk: str, part: Partition, artifact: ReleaseArtifact, repo: SignedRepository, progress: Progress,
          save: Callable[[Progress], None], tick: Callable[[int], None]) -> None:
    info = repo.target(artifact.target_path)
    if info.length != artifact.length or info.hashes.get("sha256") != artifact.sha256:
        raise WriteError(f"{artifact.target_path}: target info disagrees with the release")
    write_artifact(disk, part, artifact, lambda offset: repo.stream(info, offset), progress, save, tick)


def _prepare(disk: str, artifact: ReleaseArtifact, repo: SignedRepository, booted: BootedSlot,
             tick: Callable[[int], None]) -> tuple[BlockIndex, Plan, int] | str:
    """The index, the plan and the index's wire length; or why the full path it is."""
    signed = booted.artifact

    def mine() -> BlockIndex | str:
        if signed is None:
            return "the booted release is not in the repository"
        fd = os.open(disk, os.O_RDONLY)
        try:
            hashed = digest_blocks(fd, booted.part.offset, signed.installed_size, tick)
        finally:
            os.close(fd)
        return hashed if hashed.sha256 == signed.installed_sha256 else "the booted slot does not match its signed sha256"

    return _index_and_plan(repo, artifact, mine)


def _index_and_plan(repo: SignedRepository, artifact: ReleaseArtifact,
                    local: Callable[[], BlockIndex | str]) -> tuple[BlockIndex, Plan, int] | str:
    """The signed index of ``artifact``, the plan from what ``local`` hashed (called only once
    the index is there: hashing a slot costs a read of it) and the index's wire length; or why not."""
    from tuf.api.exceptions import DownloadHTTPError, LengthOrHashMismatchError

    info = repo.optional_target(index_path(artifact.target_path))
    if info is None:
        return "the server offers no block index"
    if info.length > artifact.length:
        return "the block index is larger than the full download"
    try:
        index = BlockIndex.decode(repo.read_target(info), artifact.installed_size, artifact.installed_sha256)
    except (LengthOrHashMismatchError, BadIndex) as error:
        return f"block index refused: {error}"
    except DownloadHTTPError as error:
        if error.status_code not in (404, 410):
            raise  # the server may be back later: retry, as for any download
        return "the server does not serve the signed block index"
    mine = local()
    if isinstance(mine, str):
        return mine
    steps = plan_within(index, mine, info.length, artifact.length)
    if not delta_worth_it(info.length + steps.fetch_bytes, artifact.length):
        return f"a delta would fetch {info.length + steps.fetch_bytes} of {artifact.length} bytes"
    return index, steps, info.length


def _reader(disk: str, part: Partition) -> Callable[[int, int], bytes]:
    def read(offset: int, length: int) -> bytes:
        fd = os.open(disk, os.O_RDONLY)
        try:
            return pread_exactly(fd, length, part.offset + offset)
        finally:
            os.close(fd)

    return read


def _blob_ranges(repo: SignedRepository, artifact: ReleaseArtifact) -> Callable[[int, int], bytes]:
    blob = blob_path(artifact.target_path)

    def fetch(start: int, end: int) -> bytes:
        data = repo.read_range(blob, artifact.installed_sha256, start, end)
        if data is None:
            raise Refused("the server answers range requests with the whole blob")
        return data

    return fetch


def _op_bytes(index: BlockIndex, op: Op, local: Callable[[int, int], bytes],
              fetch: Callable[[int, int], bytes]) -> bytes:
    start, end = op.block * BLOCK, min(op.end * BLOCK, index.size)
    if op.source is Source.ZERO:
        return bytes(end - start)
    if op.source is Source.COPY:
        data = local(op.from_block * BLOCK, end - start)
    else:
        data = fetch(start, end)
    view = memoryview(data)
    for at in range(op.count):
        block = op.block + at
        if hashlib.sha256(view[at * BLOCK:(at + 1) * BLOCK]).digest() != index.digest(block):
            where = "the booted slot" if op.source is Source.COPY else "the server"
            raise Refused(f"block {block} from {where} does not match the signed block index")
    return data


def assemble(disk: str, part: Partition, artifact: ReleaseArtifact, index: BlockIndex, steps: Plan,
             local: Callable[[int, int], bytes], fetch: Callable[[int, int], bytes], progress: Progress,
             save: Callable[[Progress], None], tick: Callable[[int], None]) -> Progress:
    """Carry out ``steps`` from the checkpoint ``progress`` on; each operation's bytes are checked
    against ``index`` before any of them is written. Progress: (blob bytes fetched, installed);
    the last one is returned."""
    if artifact.installed_size > part.size:
        raise WriteError(f"{artifact.target_path}: {artifact.installed_size} bytes do not fit the "
                         f"{part.size}-byte partition {part.label!r}")
    fd = os.open(disk, os.O_RDWR)
    try:
        sink = Sink(fd, part, artifact, progress.installed_offset)
        fetched, saved_at = progress.wire_offset, progress.installed_offset
        for op in steps.remaining(progress.installed_offset):
            data = _op_bytes(index, op, local, fetch)
            if op.source is Source.FETCH:
                fetched += len(data)
            sink.write(data)
            tick(sink.installed)
            if sink.installed - saved_at >= CHECKPOINT_BYTES or sink.installed == index.size:
                os.fsync(fd)
                save(Progress(fetched, sink.installed, True))
                saved_at = sink.installed
                durable(f"checkpoint delta {artifact.role.value} {sink.installed}")
    finally:
        os.close(fd)
    return Progress(fetched, sink.installed, True)


def transfer(state_dir: Path, release: Release) -> Transfer:
    """What this update cost on the wire (the staged report's transfer field): the UKI whole
    and each slot artifact by the path it took."""
    fetched = full = 0
    path = FULL
    for role, artifact in release.artifacts.items():
        full += artifact.length
        decision = saved_decision(state_dir, role, release.version)
        if decision is not None and decision.path == DELTA:
            path = DELTA
        fetched += artifact.length if decision is None or decision.fetched is None else decision.fetched
    return Transfer(path, fetched, full)


def uki_stream(repo: SignedRepository, release: Release, booted_uki: Path | None,
               booted: ReleaseArtifact | None, state_dir: Path) -> Iterator[bytes]:
    """The new UKI's bytes for the ESP: built in memory from the booted UKI (``booted_uki``,
    checked whole against its signed sha256 first) and ranges of the new one when its index is
    offered and that pays, else the full target streamed. The ESP install checks the result
    against the signed sha256 either way; the UKI is not checkpointed (a cut restarts it)."""
    artifact = release.artifacts[ArtifactRole.UKI]
    info = repo.target(artifact.target_path)
    built = _uki_by_delta(repo, artifact, booted_uki, booted)
    if isinstance(built, str):
        _decide(state_dir, ArtifactRole.UKI, Decision(release.version, FULL, 0, built, artifact.length))
        return repo.stream(info, 0)
    data, index_length, steps = built
    _decide(state_dir, ArtifactRole.UKI, Decision(
        release.version, DELTA, index_length, f"fetched {steps.fetch_bytes} bytes in {steps.requests} requests",
        index_length + steps.fetch_bytes, steps.requests))
    return iter([data])


def _uki_by_delta(repo: SignedRepository, artifact: ReleaseArtifact, booted_uki: Path | None,
                  booted: ReleaseArtifact | None) -> tuple[bytes, int, Plan] | str:
    """The new UKI, the index's wire length and the plan it was built by; or why not."""
    old = b""

    def mine() -> BlockIndex | str:
        nonlocal old
        if booted_uki is None or booted is None:
            return "no signed booted UKI to start from"
        try:
            old = booted_uki.read_bytes()
        except OSError as error:
            return f"the booted UKI is unreadable ({error})"
        if hashlib.sha256(old).hexdigest() != booted.installed_sha256:
            return "the booted UKI does not match its signed sha256"
        return BlockIndex(len(old), booted.installed_sha256, _digests(old))

    prepared = _index_and_plan(repo, artifact, mine)
    if isinstance(prepared, str):
        return prepared
    index, steps, index_length = prepared
    blob = _blob_ranges(repo, artifact)
    try:
        pieces = [_op_bytes(index, op, lambda at, n: old[at:at + n], blob) for op in steps.ops]
    except Refused as error:
        return str(error)
    return b"".join(pieces), index_length, steps


def _digests(data: bytes) -> bytes:
    return b"".join(hashlib.sha256(data[at:at + BLOCK]).digest() for at in range(0, len(data), BLOCK))
