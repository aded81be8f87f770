"""`berth build --verify-reproducible`: build twice, compare every artifact, show where
bytes differ.

The comparison is by sha256. For an artifact that differs, diffoscope (Debian's
package) names the place: the file inside the erofs root, the PE section of the
UKI, the cpio member of the initrd. A disk image is too big for it in
reasonable time, so its first differing byte ranges are mapped to the partition
(by label) that holds them instead.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from builder import artifacts
from updater.gpt import Partition

# What diffoscope may look at, and how much of its report is shown.
DIFFOSCOPE_FILES = ("uki.efi", "root.erofs", "root.verity", "sbom.spdx.json")
REPORT_LINES = 60
DIFFOSCOPE_TIMEOUT = 600
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Difference:
    name: str
    sha256_a: str
    sha256_b: str
    where: str  # what diffoscope or the partition map says, bounded


def different(a: Path, b: Path, names: Iterable[str]) -> list[tuple[str, str, str]]:
    """(name, sha256 in a, sha256 in b) of each artifact whose bytes differ."""
    found = []
    for name in names:
        ha, hb = artifacts.sha256(a / name), artifacts.sha256(b / name)
        if ha != hb:
            found.append((name, ha, hb))
    return found


def ranges(offsets: Sequence[int], gap: int = 4096) -> list[tuple[int, int]]:
    """Sorted differing byte offsets merged into [start, end) ranges (closer than `gap`)."""
    merged: list[tuple[int, int]] = []
    for offset in sorted(offsets):
        if merged and offset - merged[-1][1] < gap:
            merged[-1] = (merged[-1][0], offset + 1)
        else:
            merged.append((offset, offset + 1))
    return merged


def locate(spans: Sequence[tuple[int, int]], table: Sequence[Partition]) -> list[str]:
    """Each differing range as 'bytes S-E (partition LABEL +offset)' or '(partition table)'."""
    lines = []
    for start, end in spans:
        holder = next((p for p in table if p.offset <= start < p.offset + p.size), None)
        where = (
            f"partition {holder.label or holder.index} +{start - holder.offset}"
            if holder
            else "outside the partitions (GPT headers)"
        )
        lines.append(f"bytes {start}-{end} ({where})")
    return lines


def bounded(text: str, lines: int = REPORT_LINES) -> str:
    kept = text.splitlines()
    if len(kept) <= lines:
        return "\n".join(kept)
    return "\n".join(kept[:lines] + [f"… {len(kept) - lines} more lines"])


# I/O edges.


def differing_offsets(a: Path, b: Path, limit: int = 64) -> list[int]:
    """The first `limit` offsets where two files of one size differ (by 1 MiB chunks,
    then bytes)."""
    found: list[int] = []
    with a.open("rb") as fa, b.open("rb") as fb:
        position = 0
        while len(found) < limit:
            ca, cb = fa.read(_CHUNK), fb.read(_CHUNK)
            if not ca and not cb:
                break
            if ca != cb:
                found += [
                    position + i
                    for i in range(max(len(ca), len(cb)))
                    if ca[i : i + 1] != cb[i : i + 1]
                ][: limit - len(found)]
            position += _CHUNK
    return found


def diffoscope(a: Path, b: Path) -> str:
    try:
        out = subprocess.run(
            ["diffoscope", "--no-progress", "--text", "-", "--max-report-size", "200000"]
            + [str(a), str(b)],
            check=False,  # exit 1 means "differ": the report is the point
            capture_output=True,
            text=True,
            errors="replace",
            timeout=DIFFOSCOPE_TIMEOUT,
        )
    except FileNotFoundError:
        return "diffoscope is not installed (make setup installs diffoscope-minimal)"
    except subprocess.TimeoutExpired:
        return f"diffoscope took longer than {DIFFOSCOPE_TIMEOUT} s"
    return bounded(out.stdout or out.stderr)


def explain(a: Path, b: Path, name: str) -> str:
    if name in DIFFOSCOPE_FILES:
        return diffoscope(a / name, b / name)
    if name == "disk.raw":
        spans = ranges(differing_offsets(a / name, b / name))
        return "\n".join(locate(spans, artifacts.read_table(a / name)))
    return "\n".join(f"byte {o}" for o in differing_offsets(a / name, b / name, limit=8))


def compare(a: Path, b: Path, names: Iterable[str]) -> list[Difference]:
    return [
        Difference(name, ha, hb, explain(a, b, name)) for name, ha, hb in different(a, b, names)
    ]
