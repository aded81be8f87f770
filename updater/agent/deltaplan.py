"""How to build a new slot artifact from the booted slot: the pure plan (no I/O).

Given the signed block index of the new artifact and the block digests of the
booted slot (hashed and verified by the caller), each new block is a zero block
(written as zeros), a block the booted slot holds (copied from there), or
fetched from the server. Runs of blocks with the same source become one
operation, at most MAX_RUN blocks long so that progress checkpoints come often
and no operation holds much in memory. Operations come in the order of the new
artifact's blocks: the assembler writes the partition front to back, and a
checkpoint's installed offset says which operations are done.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from updater.blockindex import BLOCK, ZERO_DIGEST, BlockIndex

MAX_RUN = 1024  # blocks: 4 MiB
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
    found: dict[bytes, int] = {}
    for block in range(booted.blocks):
        found.setdefault(booted.digest(block), block)
    found.pop(ZERO_DIGEST, None)
    return found


def plan(new: BlockIndex, booted: BlockIndex) -> Plan:
    """Where each block of ``new`` comes from, preferring a run that continues the last copy."""
    local = local_blocks(booted)
    ops: list[Op] = []
    for block in range(new.blocks):
        digest = new.digest(block)
        last = ops[-1] if ops else None
        if digest == ZERO_DIGEST and new.block_length(block) == BLOCK:
            step = Op(Source.ZERO, block, 1)
        elif (last is not None and last.source is Source.COPY and last.from_block + last.count < booted.blocks
              and booted.digest(last.from_block + last.count) == digest):
            step = Op(Source.COPY, block, 1, last.from_block + last.count)
        elif digest in local:
            step = Op(Source.COPY, block, 1, local[digest])
        else:
            step = Op(Source.FETCH, block, 1)
        if (last is not None and last.source is step.source and last.count < MAX_RUN
                and (step.source is not Source.COPY or step.from_block == last.from_block + last.count)):
            ops[-1] = Op(last.source, last.block, last.count + 1, last.from_block)
        else:
            ops.append(step)
    return Plan(new.size, tuple(ops))


def delta_worth_it(delta_bytes: int, full_bytes: int) -> bool:
    """Whether ``delta_bytes`` on the wire (index and ranges) beat the full download enough."""
    return delta_bytes <= MAX_DELTA_SHARE * full_bytes
