"""Seconds from QEMU start to "provisioned" and to the declared container answering,
for a host given its declaration by a NoCloud seed (one boot).

The seed is the example declaration of qemu/seed.py (host name, SSH key, fleet
group, a busybox httpd container loaded from an archive on the seed). Measured
on the host's clock from the moment QEMU is started (qemu/milestones.py). The
shared hosts of tests/qemu record the same figures on their own boots (NoCloud on
the docker host, EC2 IMDSv2 on the podman host) and print them at the end of the
run; this script is the one-boot way to get the NoCloud figure alone.

    ~/.cache/berth/venv/bin/python bench/provision.py out/berth_1.0.0 [--json FILE]
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

from qemu.container_image import write_busybox_archive
from qemu.harness import VM, free_port
from qemu.machine import Forward
from qemu.milestones import Milestones
from qemu.seed import EXAMPLE_ARCHIVE, EXAMPLE_PAGE, EXAMPLE_PORT, example_user_data, write_seed
from qemu.ssh import ensure_key

# Beyond the harness's boot bound: on a loaded 2-core machine a TCG guest can
# take minutes more to load the archive and start the container.
ANSWER_WAIT_S = 300


def one_boot(artifact: Path, scratch: Path) -> dict[str, object]:
    archive = scratch / EXAMPLE_ARCHIVE
    tag = write_busybox_archive(archive)
    public_key = ensure_key(scratch / "declared_ed25519").decode().strip()
    seed = write_seed(scratch / "seed.iso", example_user_data(public_key, tag).encode(),
                      extra={EXAMPLE_ARCHIVE: archive.read_bytes()})
    port = free_port()
    with VM(artifact, scratch / "vm", seed=seed, forwards=(Forward(port, EXAMPLE_PORT),)) as vm:
        started = time.monotonic()
        vm.start()
        milestones = Milestones(vm.state.serial_log, started, port, EXAMPLE_PAGE)
        deadline = started + vm.boot_timeout + ANSWER_WAIT_S
        while not milestones.check() and time.monotonic() < deadline:
            if vm.stopped_reason():
                raise SystemExit(f"boot failed: {vm.stopped_reason()}")
            time.sleep(0.2)
        if len(milestones.seen) < 3:
            raise SystemExit(f"saw only {milestones.seen} in {deadline - started:.0f} s; "
                             f"console tail:\n{vm.console.text[-3000:]}")
        return {"accel": vm.accel.value, "source": "nocloud", **milestones.figures()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path, help="a berth build output directory")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="berth-bench-provision-") as scratch:
        result = one_boot(args.artifact, Path(scratch))
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
