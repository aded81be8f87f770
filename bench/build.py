"""Build figures: cold and warm build time, disk/root/UKI sizes, the update payload
(root + verity + UKI compressed with zstd as shipped) and what holds the root's bytes.

    ~/.cache/berth/venv/bin/python bench/build.py [--engine docker] [--levels 3,19]

"Cold" builds with empty mkosi caches (a fresh $BERTH_CACHE: packages are
downloaded again from the mirror); "warm" repeats the build with those caches.
Prints Markdown for the README and writes the numbers to bench/results/build.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from builder import artifacts, layout, settings
from builder.build import build
from builder.cli import DEFAULT_CONFIG
from updater import contract

MIB = 1024 * 1024


def timed_build(chosen: settings.BuildSettings, output: Path) -> tuple[float, Path]:
    start = time.monotonic()
    image = build(chosen, output, show=False)
    return time.monotonic() - start, image


def zstd_size(path: Path, level: int) -> tuple[int, float]:
    start = time.monotonic()
    proc = subprocess.run(
        ["zstd", f"-{level}", "-T0", "-q", "-c", str(path)], check=True, stdout=subprocess.PIPE
    )
    return len(proc.stdout), time.monotonic() - start


def largest(root: Path, top: int = 12) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """The biggest directories two levels down and the biggest single files of a root."""
    out = subprocess.run(
        ["du", "-x", "-B1", "--max-depth=2", str(root)], check=True, capture_output=True, text=True
    ).stdout
    dirs = [
        (int(size), Path(path).relative_to(root).as_posix())
        for size, path in (line.split("\t", 1) for line in out.splitlines())
    ]
    files = [
        (p.lstat().st_size, p.relative_to(root).as_posix())
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink()
    ]
    two_deep = [d for d in dirs if d[1].count("/") == 1]
    return sorted(two_deep, reverse=True)[:top], sorted(files, reverse=True)[:top]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", default="docker")
    parser.add_argument("--levels", default="3,19", help="zstd levels for the payload")
    args = parser.parse_args()
    chosen = settings.override(settings.load(DEFAULT_CONFIG), engine=args.engine)
    levels = [int(x) for x in args.levels.split(",")]

    with tempfile.TemporaryDirectory(prefix="berth-bench-") as tmp:
        work = Path(tmp)
        os.environ["BERTH_CACHE"] = str(work / "cache")  # cold: nothing cached
        (work / "cache").mkdir()
        cold, _ = timed_build(chosen, work / "cold")
        warm, image = timed_build(chosen, work / "warm")
        os.environ.pop("BERTH_CACHE")

        manifest = contract.Manifest.from_json((image / contract.MANIFEST).read_text())
        with (image / contract.ROOT_IMAGE).open("rb") as f:
            root_fs = layout.erofs_size(f.read(4096))
        disk_used = (image / "disk.raw").stat().st_blocks * 512
        payload = {}
        for level in levels:
            parts = {name: zstd_size(image / name, level) for name in contract.RELEASE_ARTIFACTS}
            payload[level] = {
                "bytes": {n: s for n, (s, _) in parts.items()},
                "total": sum(s for s, _ in parts.values()),
                "seconds": round(sum(t for _, t in parts.values()), 1),
            }
        rootfs = work / "rootfs"
        artifacts.extract_root(image / "root.erofs", rootfs)
        dirs, files = largest(rootfs)
        shutil.rmtree(rootfs)
        uki_sections = _uki_sections(image / contract.UKI)

    packages = sorted(manifest.packages, key=lambda p: -p.installed_size)
    results = {
        "engine": args.engine,
        "cpus": os.cpu_count(),
        "build_seconds": {"cold": round(cold, 1), "warm": round(warm, 1)},
        "disk_raw_bytes": manifest.artifacts[contract.DISK_RAW].size,
        "disk_raw_allocated_bytes": disk_used,
        "disk_qcow2_bytes": manifest.artifacts[contract.DISK_QCOW2].size,
        "root_fs_bytes": root_fs,
        "slot_bytes": manifest.slot_size,
        "verity_bytes": manifest.artifacts[contract.VERITY_IMAGE].size,
        "uki_bytes": manifest.artifacts[contract.UKI].size,
        "uki_sections": uki_sections,
        "payload_zstd": payload,
        "root_du_top_dirs": dirs,
        "root_largest_files": files,
        "packages_top": [(p.installed_size, p.name) for p in packages[:15]],
        "package_count": len(packages),
    }
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"build-{args.engine}.json").write_text(json.dumps(results, indent=2) + "\n")
    print(_markdown(results))
    return 0


def _uki_sections(path: Path) -> dict[str, int]:
    from builder import uki

    return {
        name: len(data)
        for name, data in uki.sections(path.read_bytes()).items()
        if len(data) > 64 * 1024
    }


def _markdown(r: dict) -> str:
    m = lambda b: f"{b / MIB:.1f} MiB"
    lines = [
        f"| figure ({r['engine']}, {r['cpus']} CPUs) | value |",
        "|---|---|",
        f"| build, cold (empty caches, packages downloaded) | {r['build_seconds']['cold']} s |",
        f"| build, warm (mkosi caches) | {r['build_seconds']['warm']} s |",
        f"| disk.raw (apparent / allocated) | {m(r['disk_raw_bytes'])} / {m(r['disk_raw_allocated_bytes'])} |",
        f"| disk.qcow2 | {m(r['disk_qcow2_bytes'])} |",
        f"| root file system (erofs) in a {m(r['slot_bytes'])} slot | {m(r['root_fs_bytes'])} |",
        f"| UKI ({', '.join(f'{k} {m(v)}' for k, v in r['uki_sections'].items())}) | {m(r['uki_bytes'])} |",
    ]
    for level, p in r["payload_zstd"].items():
        parts = ", ".join(f"{n} {m(b)}" for n, b in p["bytes"].items())
        lines.append(
            f"| update payload, zstd -{level} ({parts}; {p['seconds']} s) | **{m(p['total'])}** |"
        )
    lines += [
        "",
        "Root by package (installed size, top 15 of "
        f"{r['package_count']}): " + ", ".join(f"{n} {m(s)}" for s, n in r["packages_top"]),
        "",
        "Root by directory (du of the final root): "
        + ", ".join(f"/{d} {m(s)}" for s, d in r["root_du_top_dirs"]),
        "",
        "Largest files: " + ", ".join(f"/{f} {m(s)}" for s, f in r["root_largest_files"]),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
