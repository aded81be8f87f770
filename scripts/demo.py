"""`make demo`: build the default image and show where it is and what it holds.

Later parts of the demo (boot it, publish an update, roll it out) build on the
artifact directory `show_image` prints.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from builder import artifacts, settings
from builder.build import build
from builder.cli import DEFAULT_CONFIG

MIB = 1024 * 1024


def build_default_image(output: Path) -> Path:
    print(f"Building the default image from {DEFAULT_CONFIG.relative_to(REPO)} …", flush=True)
    return build(settings.load(DEFAULT_CONFIG), output)


def show_image(image: Path) -> None:
    manifest = json.loads((image / "manifest.json").read_text())
    print(
        f"\nImage {manifest['image_id']} {manifest['version']} ({manifest['engine']}) in {image}/"
    )
    for name, entry in manifest["artifacts"].items():
        print(f"  {name:<12} {entry['size'] / MIB:9.1f} MiB  sha256 {entry['sha256'][:16]}…")
    print(f"  root hash    {manifest['roothash']}")
    print("\nPartitions of disk.raw (GPT, found by type and label):")
    for part in artifacts.read_table(image / "disk.raw"):
        print(f"  {part.label:<22} {part.size / MIB:8.0f} MiB  uuid {part.uuid}")
    packages = sorted(manifest["packages"], key=lambda p: -p["installed_size"])
    print(f"\n{len(packages)} Debian packages, no package manager; the largest:")
    for p in packages[:8]:
        print(f"  {p['name']:<28} {p['version']:<28} {p['installed_size'] / MIB:6.1f} MiB")
    print(
        f"\nBoot it:  qemu-system-x86_64 -accel tcg -cpu max -m 2G -nographic "
        f"-drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd "
        f"-drive file={image}/disk.qcow2,if=virtio,snapshot=on"
    )


def main() -> int:
    from cli.errors import UserError

    try:
        show_image(build_default_image(REPO / "out"))
    except UserError as error:
        print(f"berth: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
