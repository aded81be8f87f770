"""`make demo`: build the default image and show where it is and what it holds,
then prove the update path on it in QEMU: a host boots it, an update reaches it
through the fleet server and is blessed, and a release built to fail falls back
by itself (scenarios 1 and 2 of the end-to-end tests, narrated).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from builder import artifacts, settings
from builder.build import build
from builder.cli import DEFAULT_CONFIG
from updater import contract

MIB = 1024 * 1024


def build_default_image(output: Path) -> Path:
    print(f"Building the default image from {DEFAULT_CONFIG.relative_to(REPO)} …", flush=True)
    return build(settings.load(DEFAULT_CONFIG), output)


def show_image(image: Path) -> None:
    manifest = contract.Manifest.from_json((image / contract.MANIFEST).read_text())
    print(f"\nImage {manifest.image_id} {manifest.version} ({manifest.engine}) in {image}/")
    for name, entry in manifest.artifacts.items():
        print(f"  {name:<12} {entry.size / MIB:9.1f} MiB  sha256 {entry.sha256[:16]}…")
    print(f"  root hash    {manifest.roothash}")
    print("\nPartitions of disk.raw (GPT, found by type and label):")
    for part in artifacts.read_table(image / "disk.raw"):
        print(f"  {part.label:<22} {part.size / MIB:8.0f} MiB  uuid {part.part_uuid}")
    packages = sorted(manifest.packages, key=lambda p: -p.installed_size)
    print(f"\n{len(packages)} Debian packages, no package manager; the largest:")
    for p in packages[:8]:
        print(f"  {p.name:<28} {p.version:<28} {p.installed_size / MIB:6.1f} MiB")
    print(f"\nBoot it yourself:  {sys.prefix}/bin/berth vm {image}   (ctrl-a x quits)\n")


def update_and_fall_back(v1: Path, output: Path) -> None:
    """Scenarios 1 and 2 on one VM, with the embedded defaults (SQLite, one host)."""
    import shutil
    import time

    from cli.cache import cache_dir
    from qemu import scenarios
    from qemu.container_image import write_busybox_archive
    from qemu.lab import BAD_CHECK, FAULTS, V2, Lab, build_release, lab_group

    start = time.monotonic()

    def narrate(message: str) -> None:
        print(f"[{time.monotonic() - start:5.0f}s] {message}", flush=True)

    print(f"\nBuilding {V2} (the update) and {BAD_CHECK} (built to fail its health check) …", flush=True)
    v2 = build_release(output, V2, show=True)
    bad = build_release(output, BAD_CHECK, fault=FAULTS[BAD_CHECK], show=True)
    work = cache_dir() / "demo"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    write_busybox_archive(work / "busybox.tar")
    print(f"\nA host boots {v1.name}, runs a container, takes {V2} from the fleet server, "
          f"then is offered {BAD_CHECK}, which fails its health check.", flush=True)
    with Lab(work, narrate) as lab, lab.serve({"demo": lab_group()}):
        trip = scenarios.update_then_fall_back(lab, "demo", v1, v2, bad, work / "busybox.tar")
    up, back = trip.update, trip.fallback
    print(f"""
Report
  update {trip.first_boot.version} -> {up.version}: published to blessed in {up.publish_to_blessed_s:.0f} s;
    the container (restart=always, data on /var) ran again {up.downtime_s:.0f} s after the reboot began;
    slot A kept {trip.slots_after_update['a']} as the fallback while {up.version} ran from slot B.
  faulty {back.version}: booted {back.failed_boots} times (systemd-boot counted its tries down), then
    {back.ready.version} came back by itself, {back.fallback_s:.0f} s after the reboot began;
    the agent reported {back.events[-1]} ({back.detail});
    the fleet server halted {back.version} for the group: {trip.halted}.
  Logs: console {trip.host.console_log}, fleet server {work}/serve-*.log, lab {lab.log}
  tests/e2e also proves a release whose kernel panics falls back the same way.""")


def main() -> int:
    from cli.errors import UserError

    try:
        image = build_default_image(REPO / "out")
        show_image(image)
        update_and_fall_back(image, REPO / "out")
    except UserError as error:
        print(f"berth: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
