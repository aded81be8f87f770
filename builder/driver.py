"""Runs mkosi on images/host/ with what varies per build, showing phases, not apt's output.

The full log goes to a file; the terminal gets mkosi's step lines ("‣ …")
with the time since start. mkosi's package cache, incremental cache and
workspace live under $BERTH_CACHE, never in the repository.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from builder import fault, layout, packagelock, provenance, seal
from builder.settings import BuildSettings
from cli.errors import UserError

REPO = Path(__file__).resolve().parent.parent
TREE = REPO / "images" / "host"
# mkosi scripts berth adds to every image it builds (reproducibility, the SBOM).
SCRIPTS = Path(__file__).resolve().parent / "mkosi"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def host_mirror() -> str:
    """The Debian mirror from this machine's apt sources (mkosi's default adds an
    unreachable debug-symbols repository, so the build names one mirror itself)."""
    apt = Path("/etc/apt")
    files = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*"))]
    texts = {
        f.name: f.read_text() for f in files if f.is_file() and f.suffix in (".list", ".sources")
    }
    mirror = layout.parse_mirror(texts)
    if mirror is None:
        raise UserError(
            "no Debian mirror found in /etc/apt/sources.list{,.d}: add one (deb …/debian)"
        )
    return mirror


def _common(
    *,
    tree: Path,
    output_dir: Path,
    mirror: str,
    cache: Path,
    cache_name: str,
    epoch: int,
    pins: Sequence[str] | None,
) -> list[str]:
    mk = cache / "mkosi"
    # mkosi keeps one incremental cache per directory and rebuilds it when the package
    # list changes: pinned builds get their own, so they and a lock refresh (unpinned)
    # do not evict each other's.
    if pins is not None:
        cache_name += "-locked"
    return [
        "mkosi",
        "--directory",
        str(tree),
        "--local-mirror",
        mirror,
        "--output-dir",
        str(output_dir),
        "--workspace-dir",
        str(mk / "workspace"),
        "--package-cache-dir",
        str(mk / "packages"),
        # One incremental cache per image (initrd, each engine): they stay warm side by side.
        "--cache-dir",
        str(mk / f"cache-{cache_name}"),
        "--incremental",
        "yes",
        # The tools mkosi runs read it; the finalize script sets every file's time to it.
        "--source-date-epoch",
        str(epoch),
        f"--finalize-script={SCRIPTS / 'normalize-times.finalize'}",
        # The dpkg status before any purge: the lock (builder/packagelock.py) and the SBOM.
        f"--postinst-script={SCRIPTS / 'sbom.postinst'}",
        # Exact versions from the package lock (appended to the tree's Packages=).
        *(f"--package={pin}" for pin in pins or ()),
        "--force",
    ]


def package_archives(cache: Path) -> Path:
    """Where apt keeps the .debs in mkosi's package cache (the SBOM hashes them)."""
    return cache / "mkosi" / "packages" / "cache" / "apt" / "archives"


def initrd_command(
    *, output_dir: Path, mirror: str, cache: Path, epoch: int, pins: Sequence[str] | None
) -> list[str]:
    return [
        *_common(
            tree=TREE / "initrd",
            output_dir=output_dir,
            mirror=mirror,
            cache=cache,
            cache_name="initrd",
            epoch=epoch,
            pins=pins,
        ),
        # Only the programs the initrd runs and the libraries they load (UKI 31 -> 25 MB).
        f"--finalize-script={SCRIPTS / 'prune-initrd.finalize'}",
        "build",
    ]


def image_command(
    settings: BuildSettings,
    *,
    output_dir: Path,
    initrd: Path,
    repart_dir: Path,
    extra_trees: Sequence[Path],
    mirror: str,
    cache: Path,
    epoch: int,
    pins: Sequence[str] | None,
) -> list[str]:
    return [
        *_common(
            tree=TREE,
            output_dir=output_dir,
            mirror=mirror,
            cache=cache,
            cache_name=settings.engine,
            epoch=epoch,
            pins=pins,
        ),
        # repart's UUIDs, and the mkfs values it leaves to chance (berth makes the verity).
        "--seed",
        str(provenance.seed(settings)),
        # mkosi splits Environment= like a shell: values with spaces are quoted.
        *(
            f"--environment={k}={shlex.quote(v)}"
            for k, v in provenance.mkfs_environment(settings, epoch).items()
        ),
        # The engine is one switch: a config directory included on top of the tree.
        "--include",
        str(TREE / "engines" / settings.engine),
        "--image-id",
        settings.image_id,
        "--image-version",
        settings.version,
        "--unified-kernel-image-format",
        settings.artifact_name,
        "--initrd",
        str(initrd),
        "--repart-dir",
        str(repart_dir),
        *(f"--extra-tree={tree}:/" for tree in extra_trees),
        # bootctl's random seed on the ESP differs per build; each host makes its own.
        f"--finalize-script={SCRIPTS / 'drop-boot-seed.finalize'}",
        # Kernel modules of subsystems a cloud or QEMU host never loads, then depmod (-5.9 MB).
        f"--finalize-script={SCRIPTS / 'prune-modules.finalize'}",
        *(f"--kernel-command-line={arg}" for arg in fault.kernel_command_line(settings.fault)),
        # builder/seal.py writes the real root hash over it once the verity tree is made.
        f"--kernel-command-line={seal.PLACEHOLDER_ARGUMENT}",
        "--output",
        "image",
        "build",
    ]


def run(command: list[str], log_path: Path, *, show: bool = True, append: bool = False) -> None:
    """Run mkosi, writing everything to `log_path` and echoing its phases."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    for flag in ("--workspace-dir", "--package-cache-dir", "--cache-dir"):
        Path(command[command.index(flag) + 1]).mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    # Debian's own tools only: mkosi runs ukify with whatever `python3` PATH
    # finds first, and that must be the one with python3-pefile.
    env = dict(os.environ, NO_COLOR="1", TERM="dumb", PATH="/usr/sbin:/usr/bin:/sbin:/bin")
    with log_path.open("a" if append else "w") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        try:
            proc = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                text=True,
                errors="replace",
            )
        except FileNotFoundError as error:
            raise UserError(
                f"{command[0]} not found: run `make setup` (scripts/setup-host.sh)"
            ) from error
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            text = _ANSI.sub("", line).strip()
            if show and text.startswith("‣"):
                print(
                    f"  [{time.monotonic() - start:5.0f}s] {text.lstrip('‣ ').strip()}",
                    file=sys.stderr,
                )
        status = proc.wait()
    if status != 0:
        tail = [_ANSI.sub("", t).strip() for t in log_path.read_text().splitlines()[-200:]]
        errors = [
            t for t in tail if re.search(r"error|fail|not fit|no space|unable", t, re.IGNORECASE)
        ]
        unavailable = packagelock.unavailable("\n".join(tail), packagelock.shown(packagelock.PATH))
        if unavailable is not None:
            raise unavailable
        hint = f": {errors[-1][:200]}" if errors else ""
        raise UserError(f"mkosi failed (exit {status}){hint}; full log: {log_path}")
