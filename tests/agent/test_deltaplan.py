"""The delta's pure parts: the block index format and the plan, exhaustively on small cases,
and the assembler on files (every piece checked before it is written, resumable)."""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from updater.agent import deltaplan
from updater.agent.delta import Refused, assemble
from updater.agent.deltaplan import (
    MAX_GAP,
    MAX_RUN,
    Op,
    Plan,
    Source,
    delta_worth_it,
    plan,
    plan_within,
)
from updater.agent.updatestate import Progress
from updater.blockindex import (
    BLOCK,
    ZERO_DIGEST,
    BadIndex,
    BlockIndex,
    blob_path,
    digest_blocks,
    index_path,
)
from updater.gpt import Partition
from updater.release import ArtifactRole, ReleaseArtifact


def index_of(data: bytes) -> BlockIndex:
    digests = b"".join(hashlib.sha256(data[at:at + BLOCK]).digest() for at in range(0, len(data), BLOCK))
    return BlockIndex(len(data), hashlib.sha256(data).hexdigest(), digests)


def blocks(*names: str) -> bytes:
    """One 4 KiB block per name: '0' is zeros, any other letter a block of its own."""
    return b"".join(bytes(BLOCK) if n == "0" else n.encode() * BLOCK for n in names)


def rebuild(steps: Plan, new: BlockIndex, old: bytes, new_bytes: bytes) -> bytes:
    """What ``steps`` say the new artifact is, from the old bytes and fetched new bytes."""
    out = b""
    for op in steps.ops:
        start, end = op.block * BLOCK, min(op.end * BLOCK, new.size)
        if op.source is Source.ZERO:
            out += bytes(end - start)
        elif op.source is Source.COPY:
            out += old[op.from_block * BLOCK:op.from_block * BLOCK + end - start]
        else:
            out += new_bytes[start:end]
    return out


@pytest.mark.parametrize("gap", [0, 2])
def test_every_plan_of_up_to_four_blocks_rebuilds_the_new_artifact_and_fetches_only_what_is_missing(
        gap: int) -> None:
    """With no coalescing, exactly the missing blocks are fetched; with it, also the blocks of
    gaps shorter than ``gap`` between two of them, and no two fetches are that close."""
    alphabet = "0ab"
    for old_len, new_len in itertools.product(range(4), range(1, 5)):
        for old_names in itertools.product(alphabet, repeat=old_len):
            for new_names in itertools.product(alphabet + "c", repeat=new_len):
                old, new = blocks(*old_names), blocks(*new_names)
                index = index_of(new)
                steps = plan(index, index_of(old), gap)
                assert rebuild(steps, index, old, new) == new
                # Ops cover the blocks in order, without gaps or overlap.
                assert [b for op in steps.ops for b in range(op.block, op.end)] == list(range(len(new_names)))
                missing = [at for at, n in enumerate(new_names) if n != "0" and n not in old_names]
                fetched = [b for op in steps.ops if op.source is Source.FETCH for b in range(op.block, op.end)]
                bridged = {b for at, end in itertools.pairwise(missing) if end - at - 1 < gap
                           for b in range(at, end + 1)}
                assert fetched == sorted(set(missing) | bridged), (old_names, new_names)
                assert steps.fetch_bytes == len(fetched) * BLOCK
                fetches = [op for op in steps.ops if op.source is Source.FETCH]
                assert steps.requests == len(fetches)
                assert all(b.block - a.end >= gap for a, b in itertools.pairwise(fetches))


def test_runs_coalesce_and_a_copy_follows_the_run_it_continues() -> None:
    old = blocks("a", "b", "c", "a", "b", "d")
    new = blocks("0", "0", "a", "b", "d", "x", "y")
    ops = plan(index_of(new), index_of(old)).ops
    assert ops == (Op(Source.ZERO, 0, 2), Op(Source.COPY, 2, 2, 0), Op(Source.COPY, 4, 1, 5),
                   Op(Source.FETCH, 5, 2))
    # A repeated block prefers the copy that continues the current run.
    ops = plan(index_of(blocks("c", "a", "x")), index_of(blocks("a", "b", "c", "a", "x"))).ops
    assert ops == (Op(Source.COPY, 0, 3, 2),)


def test_a_short_last_block_and_run_lengths() -> None:
    old = os.urandom(3 * BLOCK + 100)
    assert plan(index_of(old), index_of(old)).ops == (Op(Source.COPY, 0, 4, 0),)
    new = old[:3 * BLOCK] + b"x" * 100
    steps = plan(index_of(new), index_of(old))
    assert steps.ops[-1] == Op(Source.FETCH, 3, 1) and steps.fetch_bytes == 100
    big = bytes((MAX_RUN + 5) * BLOCK)
    assert [op.count for op in plan(index_of(big), index_of(b"")).ops] == [MAX_RUN, 5]


# ---- coalescing fetches: one range request for fetch runs close together ------------------


def digests_of(names: list[str], last: int = BLOCK) -> BlockIndex:
    """An index of one block per name ('0' a zero block), without the bytes: for plans over many
    blocks. ``last``: bytes in the last block."""
    digests = b"".join(ZERO_DIGEST if n == "0" else hashlib.sha256(n.encode()).digest() for n in names)
    return BlockIndex((len(names) - 1) * BLOCK + last, "", digests)


def changed(blocks: int, at: list[int]) -> tuple[BlockIndex, BlockIndex]:
    """A booted slot of ``blocks`` distinct blocks and a new artifact with the blocks ``at`` new."""
    old = [f"old{b}" for b in range(blocks)]
    new = [f"new{b}" if b in at else old[b] for b in range(blocks)]
    return digests_of(new), digests_of(old)


def fetches(steps: Plan) -> list[tuple[int, int]]:
    return [(op.block, op.count) for op in steps.ops if op.source is Source.FETCH]


def test_scattered_single_block_changes_are_one_request_spanning_them() -> None:
    # Every 10th block of 400 changed: 40 requests of one block each without coalescing.
    at = list(range(5, 400, 10))
    steps = plan(*changed(400, at))
    assert fetches(steps) == [(5, at[-1] - 5 + 1)]
    assert steps.requests == 1 and steps.fetch_bytes == (at[-1] - 5 + 1) * BLOCK
    # Ops still cover the artifact in order: the copies before and after the span stay.
    assert [op.source for op in steps.ops] == [Source.COPY, Source.FETCH, Source.COPY]


def test_fetches_across_a_gap_just_under_the_threshold_merge_and_just_over_do_not() -> None:
    under = plan(*changed(100, [0, MAX_GAP]))  # MAX_GAP - 1 copied blocks between
    assert fetches(under) == [(0, MAX_GAP + 1)]
    over = plan(*changed(100, [0, MAX_GAP + 1]))  # MAX_GAP between: two requests, nothing extra
    assert fetches(over) == [(0, 1), (MAX_GAP + 1, 1)] and over.fetch_bytes == 2 * BLOCK
    # Long gaps: each change its own request and only the changed blocks fetched.
    far = plan(*changed(2000, [10, 500, 1999]))
    assert fetches(far) == [(10, 1), (500, 1), (1999, 1)] and far.fetch_bytes == 3 * BLOCK


def test_a_gap_of_zeros_and_copies_is_bridged_like_copies_alone() -> None:
    names = ["x1"] + ["0"] * 5 + ["a"] * 3 + ["x2"] + ["0"] * (MAX_GAP + 3) + ["x3"]
    old = digests_of(["a"])
    steps = plan(digests_of(names), old)
    assert fetches(steps) == [(0, 10), (10 + MAX_GAP + 3, 1)]  # the long zero run stays zeros
    assert Op(Source.ZERO, 10, MAX_GAP + 3) in steps.ops


def test_the_end_of_the_artifact_a_short_last_block_inside_a_merged_fetch() -> None:
    old = [f"old{b}" for b in range(8)]
    new, booted = digests_of([*old[:4], "n4", *old[5:7], "n7"], last=100), digests_of(old)
    steps = plan(new, booted)
    assert fetches(steps) == [(4, 4)]
    assert steps.ops[-1].end == new.blocks and steps.fetch_bytes == 3 * BLOCK + 100


def test_a_merged_fetch_never_exceeds_max_run() -> None:
    # A change every 8 blocks over three MAX_RUNs: merged as far as MAX_RUN allows, no further.
    count = 3 * MAX_RUN
    steps = plan(*changed(count, list(range(0, count, 8))))
    assert all(n <= MAX_RUN for _, n in fetches(steps))
    assert steps.requests == 3 and steps.remaining(steps.ops[1].block * BLOCK) == steps.ops[1:]


def test_a_delta_that_pays_only_without_its_coalesced_gaps_goes_without_them() -> None:
    # A change every 8th block: coalesced, nearly every block is fetched; one request per
    # change, an eighth of them.
    new, booted = changed(800, list(range(0, 800, 8)))
    assert plan(new, booted).fetch_bytes > 0.9 * new.size
    full = new.size  # a full download as large as the slot: coalesced it would not pay
    steps = plan_within(new, booted, 0, full)
    assert steps == plan(new, booted, 0) and steps.fetch_bytes == 100 * BLOCK
    assert plan_within(new, booted, 0, 2 * full) == plan(new, booted)  # it pays coalesced: coalesced


def test_remaining_resumes_at_an_operation_boundary_only() -> None:
    steps = plan(index_of(blocks("0", "a", "b")), index_of(blocks("a")))
    assert steps.remaining(0) == steps.ops
    assert steps.remaining(BLOCK) == steps.ops[1:]
    assert steps.remaining(3 * BLOCK) == ()
    with pytest.raises(ValueError):
        steps.remaining(BLOCK + 1)


def test_the_seventy_percent_rule() -> None:
    assert delta_worth_it(70, 100) and not delta_worth_it(71, 100)
    assert deltaplan.MAX_DELTA_SHARE == 0.7


def test_index_round_trip_and_refusals(tmp_path: Path) -> None:
    data = os.urandom(5 * BLOCK) + bytes(200 * BLOCK) + b"end"
    path = tmp_path / "artifact"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        index = digest_blocks(fd, 0, len(data))
    finally:
        os.close(fd)
    assert index == index_of(data)
    wire = index.encode()
    assert len(wire) < index.blocks * 32 // 4  # zero blocks' digests compress away
    assert BlockIndex.decode(wire, index.size, index.sha256) == index
    with pytest.raises(BadIndex, match="other bytes"):
        BlockIndex.decode(wire, index.size, "0" * 64)
    with pytest.raises(BadIndex, match="decompresses past"):
        BlockIndex.decode(wire, index.size - BLOCK * 100, index.sha256)  # bounded decompression
    with pytest.raises(BadIndex, match="zstd"):
        BlockIndex.decode(b"junk", index.size, index.sha256)
    short = zstandard.ZstdCompressor().compress(zstandard.ZstdDecompressor().decompress(wire)[:-32])
    with pytest.raises(BadIndex, match="digest bytes"):
        BlockIndex.decode(short, index.size, index.sha256)
    assert index_path("berth/1.1/root.erofs.zst") == "berth/1.1/root.erofs.index"
    assert blob_path("berth/1.1/root.verity.zst") == "berth/1.1/root.verity"


# ---- the assembler on files ------------------------------------------------------------


def _setup(tmp_path: Path, old: bytes, new: bytes) -> tuple[str, Partition, ReleaseArtifact, BlockIndex]:
    disk = tmp_path / "disk"
    disk.write_bytes(b"\xee" * (2 * len(new) + BLOCK))
    part = Partition(index=1, type_uuid="", part_uuid="", first_lba=BLOCK // 512,
                     last_lba=(2 * BLOCK + len(new)) // 512 - 1, attributes=0, label="b")
    artifact = ReleaseArtifact(ArtifactRole.ROOT, "berth/1.1/root.erofs.zst", 1, "", "zstd", len(new),
                               hashlib.sha256(new).hexdigest())
    return str(disk), part, artifact, index_of(new)


def _partition(disk: str, part: Partition, size: int) -> bytes:
    with open(disk, "rb") as handle:
        handle.seek(part.offset)
        return handle.read(size)


def _moved() -> tuple[bytes, bytes, list[tuple[int, int]]]:
    """Old and new bytes and the ranges the delta fetches: blocks moved, zeros, two new blocks."""
    old = os.urandom(12 * BLOCK)
    return old, old[4 * BLOCK:] + bytes(3 * BLOCK) + os.urandom(2 * BLOCK) + old[:4 * BLOCK], [(11 * BLOCK, 13 * BLOCK)]


def _scattered() -> tuple[bytes, bytes, list[tuple[int, int]]]:
    """Three changed blocks with copies and zeros between (one range), a far one and a short
    last block (a second range)."""
    old = os.urandom(100 * BLOCK)
    new = bytearray(old[:99 * BLOCK] + b"t" * 100)
    for block in (3, 8, 20, 60):
        new[block * BLOCK:(block + 1) * BLOCK] = os.urandom(BLOCK)
    new[10 * BLOCK:13 * BLOCK] = bytes(3 * BLOCK)
    return old, bytes(new), [(3 * BLOCK, 21 * BLOCK), (60 * BLOCK, 61 * BLOCK), (99 * BLOCK, len(new))]


@pytest.mark.parametrize("case", [_moved, _scattered])
def test_assembler_writes_the_new_artifact_and_resumes_from_each_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        case: Callable[[], tuple[bytes, bytes, list[tuple[int, int]]]]) -> None:
    monkeypatch.setattr("updater.agent.delta.CHECKPOINT_BYTES", 2 * BLOCK)
    old, new, ranges = case()
    disk, part, artifact, index = _setup(tmp_path, old, new)
    steps = plan(index, index_of(old))
    fetched: list[tuple[int, int]] = []

    def fetch(start: int, end: int) -> bytes:
        fetched.append((start, end))
        return new[start:end]

    saves: list[Progress] = []
    assemble(disk, part, artifact, index, steps, lambda at, n: old[at:at + n], fetch, Progress(),
             saves.append, lambda _: None)
    assert _partition(disk, part, len(new)) == new
    assert fetched == ranges and steps.requests == len(ranges)
    assert saves[-1] == Progress(sum(end - start for start, end in ranges), len(new), True)
    # From any checkpoint, the rest of the plan finishes the same bytes.
    for checkpoint in saves:
        (tmp_path / str(checkpoint.installed_offset)).mkdir()
        disk2, part2, _, _ = _setup(tmp_path / str(checkpoint.installed_offset), old, new)
        with open(disk2, "r+b") as handle:
            handle.seek(part2.offset)
            handle.write(new[:checkpoint.installed_offset])
        more: list[Progress] = []
        assemble(disk2, part2, artifact, index, steps, lambda at, n: old[at:at + n], lambda s, e: new[s:e],
                 checkpoint, more.append, lambda _: None)
        assert _partition(disk2, part2, len(new)) == new
        assert (more or [checkpoint])[-1] == saves[-1]


@pytest.mark.parametrize("where", ["fetched", "copied", "bridged"])
def test_assembler_refuses_a_piece_that_does_not_match_the_index_before_writing_it(
        tmp_path: Path, where: str) -> None:
    """Also a block the booted slot holds but that the server sends inside a merged fetch."""
    old = os.urandom(6 * BLOCK)
    new = old[:2 * BLOCK] + os.urandom(BLOCK) + old[3 * BLOCK:4 * BLOCK] + os.urandom(BLOCK) + old[5 * BLOCK:]
    disk, part, artifact, index = _setup(tmp_path, old, new)
    steps = plan(index, index_of(old))
    assert steps.ops == (Op(Source.COPY, 0, 2, 0), Op(Source.FETCH, 2, 3), Op(Source.COPY, 5, 1, 5))
    before = _partition(disk, part, len(new))

    def fetch(start: int, end: int) -> bytes:
        data = bytearray(new[start:end])
        data[-1] ^= where == "fetched"
        data[BLOCK] ^= where == "bridged"  # block 3, the bridged one
        return bytes(data)

    def local(at: int, length: int) -> bytes:
        data = bytearray(old[at:at + length])
        data[0] ^= where == "copied"
        return bytes(data)

    with pytest.raises(Refused, match="does not match the signed block index"):
        assemble(disk, part, artifact, index, steps, local, fetch, Progress(), lambda _: None, lambda _: None)
    after = _partition(disk, part, len(new))
    # The refused operation wrote nothing: its blocks still hold what the slot held before.
    refused = steps.ops[0] if where == "copied" else steps.ops[1]
    span = slice(refused.block * BLOCK, refused.end * BLOCK)
    assert after[span] == before[span]
