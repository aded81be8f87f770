"""root.verity before and after berth made it itself: the hash tree of one build's
root.erofs as systemd-repart 254 made it (512-byte data and hash blocks) and as
builder/verity.py makes it (4 KiB), each as its slot holds it and zstd -19
compressed (what an update carries: `root.verity.zst`).

    ~/.cache/berth/venv/bin/python bench/verity.py ARTIFACT_DIR [--workdir DIR]

Same erofs, same salt and UUID for both (the block size is the only difference);
the slot sizes are the ones builder/layout.py gives each block size for the build's
root slot.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import tempfile
from pathlib import Path

from builder import layout, verity
from updater import contract

MIB = 1 << 20


def _tree(data: Path, out: Path, block: int, data_bytes: int) -> None:
    subprocess.run(
        [
            "veritysetup", "format", f"--data-block-size={block}", f"--hash-block-size={block}",
            f"--data-blocks={data_bytes // block}", "--salt=" + "ab" * 32,
            "--uuid=00000000-0000-4000-8000-000000000000", str(data), str(out),
        ],
        check=True, capture_output=True,
    )


def _zstd(path: Path) -> int:
    packed = subprocess.run(["zstd", "-19", "-T1", "-q", "-c", str(path)], check=True, capture_output=True)
    return len(packed.stdout)


def _legacy_slot(slot_bytes: int) -> int:
    """builder/layout.py's verity slot for 512-byte blocks (what it was before)."""
    blocks, total = math.ceil(slot_bytes / 512), 8
    while blocks > 1:
        blocks = math.ceil(blocks / 16)
        total += blocks
    return math.ceil(total * 512 / MIB) * MIB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("artifacts", type=Path)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    manifest = contract.Manifest.from_json((args.artifacts / contract.MANIFEST).read_text())
    root = args.artifacts / contract.ROOT_IMAGE
    with root.open("rb") as f:
        data_bytes = layout.erofs_size(f.read(4096))
    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        for block, slot in ((512, _legacy_slot(manifest.slot_size)), (verity.BLOCK, manifest.verity_slot_size)):
            tree = Path(work) / f"tree-{block}"
            _tree(root, tree, block, data_bytes)
            tree_bytes = tree.stat().st_size
            tree.write_bytes(tree.read_bytes() + bytes(slot - tree_bytes))  # as the slot holds it
            rows.append({"block": block, "tree": tree_bytes, "slot": slot, "zstd19": _zstd(tree)})
    print(json.dumps({"erofs_bytes": data_bytes, "rows": rows}, indent=2))
    print(f"{'blocks':>7} {'tree':>12} {'slot (root.verity)':>19} {'zstd -19':>12}")
    for r in rows:
        print(f"{r['block']:>7} {r['tree']:>12,} {r['slot']:>19,} {r['zstd19']:>12,}")


if __name__ == "__main__":
    main()
