"""End-to-end figures on real booted hosts (QEMU; TCG on machines where KVM fails):

  publish -> blessed   from `berth publish` starting to the server recording the
                       host's `blessed` report (poll, download into slot B, verify,
                       stage, reboot lock, reboot, health checks, bless)
  downtime             from the agent's `rebooting` report to the container
                       (restart=always, volume on /var) running again on the new version
  fallback             from the `rebooting` report into a release built to fail its
                       health check to the previous version's BERTH-READY (three failed
                       boots counted down by systemd-boot, then the fallback boot)

    ~/.cache/berth/venv/bin/python bench/e2e.py [--out out/] [--json FILE]

Builds 1.0.0, 1.1.0 and 1.3.0 (fault=health-check) into --out first (mkosi's caches
keep that to minutes), then runs one host against a real `berth serve` on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qemu import scenarios
from qemu.container_image import write_busybox_archive
from qemu.lab import BAD_CHECK, FAULTS, V1, V2, Lab, build_release, lab_group


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "out", help="where the releases are built"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    start = time.monotonic()

    def narrate(message: str) -> None:
        print(f"[{time.monotonic() - start:5.0f}s] {message}", file=sys.stderr, flush=True)

    v1, v2 = build_release(args.out, V1), build_release(args.out, V2)
    bad = build_release(args.out, BAD_CHECK, fault=FAULTS[BAD_CHECK])
    with tempfile.TemporaryDirectory(prefix="berth-bench-e2e-") as tmp:
        work = Path(tmp)
        write_busybox_archive(work / "app.tar")
        with Lab(work, narrate) as lab, lab.serve({"bench": lab_group()}):
            trip = scenarios.update_then_fall_back(lab, "bench", v1, v2, bad, work / "app.tar")
            accel = trip.host.vm.accel.value
    figures = {
        "accel": accel,
        "first_boot_to_ready_s": round(trip.first_boot.uptime_s, 1),
        "publish_to_blessed_s": round(trip.update.publish_to_blessed_s, 1),
        "update_downtime_s": round(trip.update.downtime_s or 0.0, 1),
        "fallback_s": round(trip.fallback.fallback_s, 1),
        "fallback_failed_boots": trip.fallback.failed_boots,
    }
    print(f"accelerator                              {accel}")
    print(f"publish -> host blessed on {V2}          {figures['publish_to_blessed_s']:7.0f} s")
    print(f"downtime per update (reboot -> app up)   {figures['update_downtime_s']:7.0f} s")
    print(
        f"fallback ({figures['fallback_failed_boots']} failed boots -> {V2} up)    "
        f"{figures['fallback_s']:7.0f} s"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
