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

# The example declaration the shared docker host of tests/qemu and bench/provision.py
# boot with: what it declares is what they check.
EXAMPLE_HOSTNAME = "berth-seeded"
EXAMPLE_GROUP = "provisioned"
EXAMPLE_CONTAINER = "hello"
EXAMPLE_PAGE = "declared container answering"
EXAMPLE_PORT = 8080
EXAMPLE_ARCHIVE = "busybox.tar"


def example_user_data(public_key: str, tag: str, archive: str = EXAMPLE_ARCHIVE,
                      hostname: str = EXAMPLE_HOSTNAME) -> str:
    """#cloud-config as users write it, with berth's part under berth: (a container
    from the busybox archive of qemu/container_image.py, on the seed beside it or,
    for a host given this by a metadata service, at a URL)."""
    # The shell stays PID 1 and ends on SIGTERM: busybox httpd as PID 1 ignores it, so
    # every `docker stop`/`podman stop` (a removal, each reboot) waited its 10 s for a kill.
    serve = (f"echo {EXAMPLE_PAGE} > /tmp/index.html && trap 'exit 0' TERM; "
             f"busybox httpd -f -p {EXAMPLE_PORT} -h /tmp & wait")
    return f"""#cloud-config
hostname: {hostname}
ssh_authorized_keys:
  - {public_key}
berth:
  agent:
    group: {EXAMPLE_GROUP}
  containers:
    - name: {EXAMPLE_CONTAINER}
      image: {tag}
      archive: {archive}
      command: [sh, -c, "{serve}"]
      ports: ["{EXAMPLE_PORT}:{EXAMPLE_PORT}"]
      restart: always
"""


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


def seed_for_user_data(user_data: Path, path: Path) -> Path:
    """The seed for ``berth vm --user-data FILE``: FILE, plus the archives its
    containers name, taken from FILE's directory."""
    from cli.errors import UserError
    from updater.provision.schema import parse_user_data

    try:
        raw = user_data.read_bytes()
    except OSError as error:
        raise UserError(f"--user-data {user_data}: {error.strerror}") from None
    # Refused here, the mistake costs a second, not a boot.
    config = parse_user_data(raw, str(user_data))
    extra = {}
    for container in config.containers:
        if container.archive and not container.archive_sha256:  # a URL archive is the host's to fetch
            archive = user_data.parent / container.archive
            if not archive.is_file():
                raise UserError(f"{user_data}: archive '{container.archive}' is not beside it ({archive})")
            extra[container.archive] = archive.read_bytes()
    return write_seed(path, raw, extra=extra)
