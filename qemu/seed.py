"""A NoCloud seed: the ISO 9660 volume labelled ``cidata`` that cloud-init documents
(files ``user-data`` and ``meta-data`` at its top), made with genisoimage.

Extra files go beside them, e.g. a container archive a declaration names.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

DEFAULT_META_DATA = b"instance-id: iid-berth-vm\n"


def write_seed(path: Path, user_data: bytes, meta_data: bytes = DEFAULT_META_DATA,
               extra: Mapping[str, bytes] | None = None, label: str = "cidata") -> Path:
    with tempfile.TemporaryDirectory(prefix="berth-seed-") as scratch:
        files = {"user-data": user_data, "meta-data": meta_data, **(extra or {})}
        for name, data in files.items():
            if "/" in name or name.startswith("."):
                raise ValueError(f"seed file names are plain names, got {name!r}")
            Path(scratch, name).write_bytes(data)
        # Joliet and Rock Ridge: the names stay as written (plain ISO 9660 would mangle them).
        subprocess.run(
            ["genisoimage", "-quiet", "-output", str(path), "-volid", label, "-joliet", "-rock",
             *sorted(files)],
            cwd=scratch, check=True, capture_output=True,
        )
    return path
