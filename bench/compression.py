"""Bytes on the wire of one build's release at each zstd level, and the time to make them:
each slot artifact compressed as `berth publish` does (updater/publish/repository.py's
compress_frames: independent frames, on every CPU), the UKI as it travels (uncompressed).

    ~/.cache/berth/venv/bin/python bench/compression.py ARTIFACT_DIR [--levels 3,19] [--json OUT]

Sizes are exact; times are wall-clock on this machine, loose when others share it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from updater.publish.repository import BUILD_FILES, FRAME_BYTES, compress_frames
from updater.release import TARGET_COMPRESSION, TARGET_FILENAMES


def measure(artifacts: Path, levels: list[int], frame_bytes: int = FRAME_BYTES) -> list[dict[str, object]]:
    """One row per level and target, then one "all" row per level."""
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as work:
        packed = Path(work) / "packed"
        for level in levels:
            total, seconds = 0, 0.0
            for role, name in BUILD_FILES.items():
                source = artifacts / name
                start = time.monotonic()
                if TARGET_COMPRESSION[role] == "zstd":
                    compress_frames(source, packed, frame_bytes, level)
                    size = packed.stat().st_size
                else:
                    size = source.stat().st_size
                took = time.monotonic() - start
                rows.append({"level": level, "target": TARGET_FILENAMES[role], "raw_bytes": source.stat().st_size,
                             "wire_bytes": size, "seconds": round(took, 1)})
                total, seconds = total + size, seconds + took
            rows.append({"level": level, "target": "all", "wire_bytes": total, "seconds": round(seconds, 1)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("artifacts", type=Path, help="a `berth build` output directory")
    parser.add_argument("--levels", default="3,19", help="comma-separated zstd levels (default 3,19)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    rows = measure(args.artifacts, [int(level) for level in args.levels.split(",")])
    for row in rows:
        raw = f"{row['raw_bytes']:>13,}" if "raw_bytes" in row else " " * 13
        print(f"zstd -{row['level']:<3} {row['target']:<16} {raw} -> {row['wire_bytes']:>13,}  {row['seconds']:>6} s")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
