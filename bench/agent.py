"""Agent figures: writing and verifying a release into the inactive slot against
the disk's own limit (dd of the same bytes with fsync, in the same run), bytes
on the wire per target, the writer's write and read-back times on a block device,
and the agent's resident memory idle and while writing.

    ~/.cache/berth/venv/bin/python bench/agent.py [--root-mib 256] [--slot-mib N] [--workdir DIR]
        [--delta] [--image BUILD]

Synthetic release (half random, half zero bytes: zstd takes it to about half,
close to a real root's 178/452 MB) laid out as `berth build` lays it out: the
root image is the whole slot (erofs, then zeros), the verity image the whole
verity slot (4 KiB blocks, as builder/verity.py hashes). A real GPT disk
image file, a TUF repository made by `berth publish` and served on 127.0.0.1;
the agent runs as `berth agent`. The writer alone is then timed on a loop device
over a copy of the disk (root; else on the file), its slot b first filled with
0xff bytes: the inactive slot holds an older release, never zeros.

``--delta``: 1.1 is 1.0 with one MiB in eight replaced, so the agent assembles
its slot from the booted one (updater/agent/delta.py) instead of downloading it
whole. ``--image BUILD``: the agent runs in a `berth build` output's root (its
root.erofs extracted, chrooted into; root only) — the image's own Python,
libraries and agent, as on a host. The writing peak is the VmHWM of the
`run --once` process (in the service, the forked step does that work).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from cli.cache import cache_dir
from updater import contract

REPO = Path(__file__).resolve().parents[1]


def _fixtures():
    spec = importlib.util.spec_from_file_location(
        "agent_fixtures", REPO / "tests/agent/conftest.py"
    )
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["agent_fixtures"] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def _agent(host, *args: str, image: Path | None = None) -> subprocess.Popen[str]:
    """`berth agent` on ``host``: from this checkout, or in the extracted ``image`` root."""
    command = (["chroot", str(image), "/usr/bin/berth"] if image is not None
               else [sys.executable, "-m", "cli.main"])
    with open(host.root.parent / "agent.log", "a") as log:
        return subprocess.Popen(
            [*command, "agent", "--host-root", str(host.root), *args],
            cwd=REPO,
            text=True,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


def _peak_kib(process: subprocess.Popen[str]) -> int:
    """Wait for ``process``; its peak resident set (VmHWM, which only grows, read every
    20 ms until it exits). Not rusage's maxrss: Linux counts into it the size of the
    process it was forked from (this one, holding the releases it built) before its exec."""
    peak = 0
    while process.poll() is None:
        peak = max(peak, _status_kib(process.pid, "VmHWM"))
        time.sleep(0.02)
    return peak


@contextlib.contextmanager
def _image_root(build: Path, workdir: Path) -> Iterator[Path]:
    """``build``'s root.erofs extracted under ``workdir``, with /proc, /dev and ``workdir``
    (the host on files, at the same path) mounted into it."""
    root = workdir / "image-root"
    subprocess.run(["fsck.erofs", f"--extract={root}", str(build / contract.ROOT_IMAGE)], check=True,
                   capture_output=True)
    mounts = [(Path("/proc"), root / "proc"), (Path("/dev"), root / "dev"),
              (workdir, root / str(workdir).lstrip("/"))]
    done: list[Path] = []
    try:
        for source, target in mounts:
            target.mkdir(parents=True, exist_ok=True)
            subprocess.run(["mount", "--bind", str(source), str(target)], check=True)
            done.append(target)
        yield root
    finally:
        for target in reversed(done):
            subprocess.run(["umount", "--lazy", str(target)], check=True)


@contextlib.contextmanager
def _block_device(disk: Path) -> Iterator[str]:
    """A loop device over ``disk`` when we may make one, else the file itself."""
    if os.geteuid() != 0 or shutil.which("losetup") is None:
        yield str(disk)
        return
    device = subprocess.run(
        ["losetup", "--find", "--show", str(disk)], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        yield device
    finally:
        subprocess.run(["losetup", "--detach", device], check=True)


def _writer_times(disk: Path, repo: Path, version: str) -> dict[str, dict[str, float | str]]:
    """Stream each slot target from the repository's file into slot b, then read it back."""
    from updater.agent.slots import find_slots
    from updater.agent.updatestate import Progress
    from updater.agent.writer import read_back, write_artifact
    from updater.gpt import read_partitions
    from updater.release import ArtifactRole, releases_from_targets, stored_target_path

    signed = json.loads((repo / "metadata/targets.json").read_text())["signed"]
    release = next(r for r in releases_from_targets(signed) if r.version == version)
    times: dict[str, dict[str, float | str]] = {}
    old = b"\xff" * (1 << 20)
    with _block_device(disk) as device:
        slot = find_slots(read_partitions(device))["b"]
        for role, part in ((ArtifactRole.ROOT, slot.root), (ArtifactRole.VERITY, slot.verity)):
            artifact = release.artifacts[role]
            path = repo / "targets" / stored_target_path(artifact.target_path, artifact.sha256)
            with open(device, "r+b") as handle:  # an older release's bytes, on the device
                handle.seek(part.offset)
                handle.writelines(old for _ in range(part.size >> 20))
                os.fsync(handle.fileno())

            def stream(offset: int, path: Path = path) -> Iterator[bytes]:
                with open(path, "rb") as source:
                    source.seek(offset)
                    while chunk := source.read(1 << 20):
                        yield chunk

            start = time.monotonic()
            write_artifact(device, part, artifact, stream, Progress(), lambda _: None, lambda _: None)
            written = time.monotonic()
            if not read_back(device, part, artifact, lambda _: None):
                raise SystemExit(f"{artifact.target_path}: read back does not match")
            times[role.value] = {
                "write_s": round(written - start, 2),
                "read_back_s": round(time.monotonic() - written, 2),
                "on": "loop device" if device != str(disk) else "file",
            }
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root-mib", type=int, default=256, help="size of the release's root payload"
    )
    parser.add_argument(
        "--slot-mib", type=int, default=0, help="root slot size (default: the payload + 1/8 + 16 MiB)"
    )
    parser.add_argument("--workdir", type=Path, default=cache_dir() / "bench-agent")
    parser.add_argument("--delta", action="store_true", help="1.1 shares 7/8 of 1.0's root: a delta update")
    parser.add_argument("--image", type=Path, help="run the agent in this build's root (chroot; root only)")
    args = parser.parse_args()
    fx = _fixtures()
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    slot_mib = args.slot_mib or args.root_mib + args.root_mib // 8 + 16
    load_before = os.getloadavg()
    print(
        f"building releases (root payload {args.root_mib} MiB, slots {slot_mib} MiB) in {args.workdir}"
    )
    out = args.workdir / "releases"
    if args.delta:
        blob = bytearray(os.urandom((args.root_mib << 20) // 2) + bytes((args.root_mib << 20) // 2))
        first = fx.build_release(out, "1.0", slot_mib=slot_mib, whole_slot=True, blob=bytes(blob))
        for mib in range(0, args.root_mib, 8):
            blob[mib << 20:(mib + 1) << 20] = os.urandom(1 << 20)
        releases = {"1.0": first,
                    "1.1": fx.build_release(out, "1.1", slot_mib=slot_mib, whole_slot=True, blob=bytes(blob))}
    else:
        releases = {
            "1.0": fx.build_release(out, "1.0", 4 << 20, slot_mib, whole_slot=True),
            "1.1": fx.build_release(out, "1.1", args.root_mib << 20, slot_mib, whole_slot=True),
        }
    base_disk = args.workdir / "base.raw"
    fx.make_disk(base_disk, releases["1.0"], slot_mib)
    keys = args.workdir / "keys"
    fx.berth(["keys", "init", "--keys", str(keys)])
    server, httpd = fx.start_server(args.workdir / "served")
    repo = server.root / "repo"
    fx.publish(repo, keys, releases["1.0"])
    host = fx.make_host(
        args.workdir, base_disk, releases, f"{server.url}/repo", repo / "metadata/root.json"
    )
    host.settings(poll_interval_s=2)

    with contextlib.ExitStack() as stack:
        image = stack.enter_context(_image_root(args.image, args.workdir)) if args.image else None
        idle = _agent(host, "run", image=image)  # nothing newer than 1.0: the service loop idles
        time.sleep(4)
        idle_rss = _status_kib(idle.pid, "VmRSS")
        idle.terminate()
        idle.wait()

        print("publishing 1.1")
        fx.berth(["publish", str(releases["1.1"].directory), "--repo", str(repo), "--keys", str(keys)])
        sent_before = server.bytes_sent
        start = time.monotonic()
        update = _agent(host, "run", "--once", image=image)
        peak_rss = _peak_kib(update)
        agent_s = time.monotonic() - start
    if update.returncode != 0 or host.verified_boot() != "1.1":
        print((args.workdir / "agent.log").read_text(), file=sys.stderr)
        return 1
    downloaded = server.bytes_sent - sent_before
    httpd.shutdown()

    parts = fx.sfdisk_json(host.disk)
    installed = 0
    start = time.monotonic()
    for part, name in ((parts[3], contract.ROOT_IMAGE), (parts[4], contract.VERITY_IMAGE)):
        source = releases["1.1"].directory / name
        installed += source.stat().st_size
        subprocess.run(
            [
                "dd",
                f"if={source}",
                f"of={host.disk}",
                "bs=4M",
                "conv=fsync,notrunc",
                "oflag=seek_bytes",
                f"seek={part['start'] * 512}",
                "status=none",
            ],
            check=True,
        )
    dd_s = time.monotonic() - start
    shutil.copyfile(base_disk, args.workdir / "writer.raw")
    writer = _writer_times(args.workdir / "writer.raw", repo, "1.1")

    wire = {p.name.split(".", 1)[1]: p.stat().st_size for p in (repo / "targets/berth/1.1").iterdir()}
    targets = sum(wire.values())
    figures = {
        "root_payload_mib": args.root_mib,
        "slot_mib": slot_mib,
        "installed_bytes": installed,
        "target_bytes": targets,
        "wire_bytes": wire,
        "downloaded_bytes": downloaded,
        "agent_update_s": round(agent_s, 2),
        "dd_fsync_s": round(dd_s, 2),
        "agent_vs_dd": round(agent_s / dd_s, 2),
        "agent_mib_per_s": round(installed / agent_s / 2**20, 1),
        "dd_mib_per_s": round(installed / dd_s / 2**20, 1),
        "rss_idle_mib": round(idle_rss / 1024, 1),
        "rss_writing_peak_mib": round(peak_rss / 1024, 1),
        "update": "delta" if args.delta else "full",
        "agent_from": str(args.image) if args.image else "checkout",
        "writer": writer,
        "load_average": [round(x, 2) for x in (*load_before, *os.getloadavg())],
    }
    print(
        f"installed {installed / 2**20:.1f} MiB (root + verity) from {downloaded / 2**20:.1f} MiB downloaded "
        f"({targets / 2**20:.1f} MiB of targets)"
    )
    print(
        f"agent: check + stream + write + read back + stage  {agent_s:6.2f} s  "
        f"({figures['agent_mib_per_s']} MiB/s)"
    )
    print(
        f"dd of the same bytes, conv=fsync                   {dd_s:6.2f} s  ({figures['dd_mib_per_s']} MiB/s)"
    )
    print(
        f"agent RSS: idle {figures['rss_idle_mib']} MiB, writing (peak) {figures['rss_writing_peak_mib']} MiB"
    )
    print("on the wire: " + ", ".join(f"{n} {b / 2**20:.1f} MiB" for n, b in sorted(wire.items())))
    for role, t in writer.items():
        print(f"writer, {role} on a {t['on']}: write {t['write_s']} s, read back {t['read_back_s']} s")
    print(f"load average (1/5/15 min) before {load_before}, after {os.getloadavg()}")
    print(json.dumps(figures))
    shutil.rmtree(args.workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
