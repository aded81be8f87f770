"""How to build a new slot artifact from the booted slot: the pure plan (no I/O).

Given the signed block index of the new artifact and the block digests of the
booted slot (hashed and verified by the caller), each new block is a zero block
(written as zeros), a block the booted slot holds (copied from there), or
fetched from the server. Runs of blocks with the same source become one
operation, at most MAX_RUN blocks long so that progress checkpoints come often
and no operation holds much in memory. Operations come in the order of the new
artifact's blocks: the assembler writes the partition front to back, and a
checkpoint's installed offset says which operations are done.

Each FETCH operation is one HTTP range request. Fetches separated by a short gap
of copies or zeros become one fetch of the whole span (the gap's blocks are in
the server's blob too, and are checked against the index like any fetched
block): a release that moves blocks in scattered places would otherwise cost a
request per few blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from updater.blockindex import BLOCK, DIGEST, ZERO_DIGEST, BlockIndex

MAX_RUN = 1024  # blocks: 4 MiB
# Fetch runs closer than this many blocks (128 KiB) are fetched as one, gap included: each
# merge trades one request for fewer bytes than a request costs. Measured natively against
# `berth serve` on localhost with the agent's client (one kept-alive connection): 0.87 ms a
# request, 1.75 ms a MiB, so a request costs what ~500 KB do there; on a 1 Gbit/s LAN with
# a 1 ms round trip ~230 KB; under QEMU/TCG, where the client's Python and TLS run
# emulated, the suite's 1.3.0 took 110 s longer than a small delta for ~1,560 more requests
# (under 70 ms each, its extra bytes included). A slow link with a short
# round trip (100 Mbit/s, 1 ms: ~25 KB) is where it costs more than it saves; the
# gaps' bytes also count against the 70 % rule (see plan_within).
MAX_GAP = 32
# Above this share of the full download the delta is not worth its reads and requests.
MAX_DELTA_SHARE = 0.7


class Source(StrEnum):
    ZERO = "zero"
    COPY = "copy"  # from the booted slot
    FETCH = "fetch"  # from the server's blob, by range


@dataclass(frozen=True)
class Op:
    source: Source
    block: int  # first block of the new artifact
    count: int
    from_block: int = 0  # COPY: first block in the booted slot

    @property
    def end(self) -> int:
        return self.block + self.count


@dataclass(frozen=True)
class Plan:
    size: int
    ops: tuple[Op, ...]

    @property
    def fetch_bytes(self) -> int:
        return sum(_bytes(self.size, op) for op in self.ops if op.source is Source.FETCH)

    @property
    def requests(self) -> int:
        """HTTP range requests: one per FETCH operation."""
        return sum(1 for op in self.ops if op.source is Source.FETCH)

    def remaining(self, installed: int) -> tuple[Op, ...]:
        """The operations after a checkpoint at ``installed`` bytes (always an operation's end)."""
        if installed >= self.size:
            return ()
        block = installed // BLOCK
        for at, op in enumerate(self.ops):
            if op.block == block and installed % BLOCK == 0:
                return self.ops[at:]
        raise ValueError(f"checkpoint at {installed} bytes is no operation's start")


def _bytes(size: int, op: Op) -> int:
    return min(op.end * BLOCK, size) - op.block * BLOCK


def local_blocks(booted: BlockIndex) -> dict[bytes, int]:
    """Digest -> first block of the booted slot holding it (zero blocks need no source)."""
    digests = booted.digests
    # Built back to front so the first block holding a digest is the one kept.
    found = {digests[at:at + DIGEST]: at // DIGEST for at in range(len(digests) - DIGEST, -1, -DIGEST)}
    found.pop(ZERO_DIGEST, None)
    return found


def plan(new: BlockIndex, booted: BlockIndex, max_gap: int = MAX_GAP) -> Plan:
    """Where each block of ``new`` comes from, preferring a run that continues the last copy;
    fetches fewer than ``max_gap`` blocks apart are one (0: none merged)."""
    # One pass over every block of a slot (a quarter of a million under a 1 GiB one): the run
    # being built is kept in locals and becomes an Op only when it ends, which under TCG is
    # the difference between seconds and a minute of a small host's CPU.
    local = local_blocks(booted)
    new_digests, old_digests, old_blocks = new.digests, booted.digests, booted.blocks
    full_blocks = new.size // BLOCK  # blocks of a whole BLOCK bytes (only the last may be short)
    ops: list[Op] = []
    source: Source | None = None
    first = count = origin = 0  # the run: its first new block, length and (COPY) first booted block
    for block in range(new.blocks):
        digest = new_digests[block * DIGEST:(block + 1) * DIGEST]
        following = origin + count  # the booted block that would continue a copy run
        if digest == ZERO_DIGEST and block < full_blocks:
            step, step_origin = Source.ZERO, 0
        elif (source is Source.COPY and following < old_blocks
              and old_digests[following * DIGEST:(following + 1) * DIGEST] == digest):
            step, step_origin = Source.COPY, following
        elif (held := local.get(digest)) is not None:
            step, step_origin = Source.COPY, held
        else:
            step, step_origin = Source.FETCH, 0
        if step is source and count < MAX_RUN and (step is not Source.COPY or step_origin == following):
            count += 1
            continue
        if source is not None:
            ops.append(Op(source, first, count, origin))
        source, first, count, origin = step, block, 1, step_origin
    if source is not None:
        ops.append(Op(source, first, count, origin))
    return Plan(new.size, tuple(_coalesce(ops, max_gap)))


def _coalesce(ops: list[Op], max_gap: int) -> list[Op]:
    """``ops`` with each FETCH that follows another across fewer than ``max_gap`` blocks of copies
    and zeros merged with it, gap included, while the merged fetch stays within MAX_RUN."""
    out: list[Op] = []
    fetch: int | None = None  # index in ``out`` of the last FETCH
    for op in ops:
        if op.source is Source.FETCH and fetch is not None:
            last = out[fetch]
            if op.block - last.end < max_gap and op.end - last.block <= MAX_RUN:
                out[fetch:] = [Op(Source.FETCH, last.block, op.end - last.block)]
                continue
        if op.source is Source.FETCH:
            fetch = len(out)
        out.append(op)
    return out


def plan_within(new: BlockIndex, booted: BlockIndex, index_bytes: int, full_bytes: int) -> Plan:
    """The plan to carry out: coalesced, unless the gaps it fetches take a delta that pays
    without them past MAX_DELTA_SHARE; then one fetch per run. Deterministic in its inputs,
    so a restart after a power cut plans the same and resumes at its checkpoint."""
    steps = plan(new, booted)
    if delta_worth_it(index_bytes + steps.fetch_bytes, full_bytes):
        return steps
    return plan(new, booted, 0)


def delta_worth_it(delta_bytes: int, full_bytes: int) -> bool:
    """Whether ``delta_bytes`` on the wire (index and ranges) beat the full download enough."""
    return delta_bytes <= MAX_DELTA_SHARE * full_bytes
