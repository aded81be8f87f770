"""Bytes on the wire of an update by delta, as a share of the full download, between two
real builds (`berth build` output directories), and the time to assemble a slot each way.

    ~/.cache/berth/venv/bin/python bench/delta.py OLD_BUILD NEW_BUILD [--label a]

Both builds are published with `berth publish`'s own code into a scratch repository
(compressed targets, block indexes, blobs). For each slot artifact the agent's own
planner (updater/agent/deltaplan.py) is run against the old build's artifact, as a
host booted from it would; the delta's cost is the signed index plus the ranges it
fetches, and the UKI goes whole. Then the new root is assembled into a scratch file
both ways with the agent's own writer and assembler, from local files (no network:
the times are the host's work, not a link's), and by delta once more with its ranges
fetched by the agent's own HTTP client from a real `berth serve` on localhost (plain
HTTP: the per-request cost of both ends, without a link's). Each delta figure comes
twice: with fetches close together coalesced into one request (the agent's plan) and
without (``max_gap`` 0, the plan before coalescing). Prints Markdown for the README
and adds the figures to bench/results/delta.json under ``--label``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from updater.agent.delta import assemble
from updater.agent.deltaplan import MAX_GAP, delta_worth_it, plan, plan_within
from updater.agent.fetch import RequestsFetcher
from updater.agent.updatestate import Progress
from updater.agent.writer import write_artifact
from updater.blockindex import BlockIndex, blob_path, digest_blocks, index_path
from updater.fleet.launch import running_server, write_config
from updater.gpt import Partition
from updater.publish.repository import BUILD_FILES, DELTA_ROLES, Repository, init_keys
from updater.release import ArtifactRole, Release, ReleaseArtifact, stored_target_path

RESULTS = REPO / "bench/results/delta.json"


def _index(path: Path, size: int) -> BlockIndex:
    fd = os.open(path, os.O_RDONLY)
    try:
        return digest_blocks(fd, 0, size)
    finally:
        os.close(fd)


def _scratch_partition(path: Path, size: int) -> Partition:
    with open(path, "wb") as handle:
        handle.truncate(size)
    return Partition(index=0, type_uuid="", part_uuid="", first_lba=0, last_lba=size // 512 - 1,
                     attributes=0, label="scratch")


def _chunks(path: Path, offset: int) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        handle.seek(offset)
        while chunk := handle.read(1 << 20):
            yield chunk


def _read(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read(length)


def measure(old_dir: Path, new_dir: Path, work: Path) -> dict[str, object]:
    keys = work / "keys"
    init_keys(keys, {"root": 1, "targets": 1, "snapshot": 1, "timestamp": 1})
    # Two repositories: the builds may carry the same version (two builds of one commit).
    old = Repository(work / "old-repo", keys).publish(old_dir, None)
    repository = Repository(work / "repo", keys)
    new = repository.publish(new_dir, None)
    targets = repository.load("targets").signed.targets
    rows: dict[str, dict[str, int]] = {}
    for role, artifact in new.artifacts.items():
        row = {"full": artifact.length, "delta": artifact.length, "index": 0, "ranges": 0, "requests": 0}
        if role in DELTA_ROLES:
            info = targets[index_path(artifact.target_path)]
            index = BlockIndex.decode((work / "repo/targets" / stored_target_path(info.path, info.hashes["sha256"]))
                                      .read_bytes(), artifact.installed_size, artifact.installed_sha256)
            mine = _index(old_dir / BUILD_FILES[role], old.artifacts[role].installed_size)
            steps, apart = plan_within(index, mine, info.length, artifact.length), plan(index, mine, 0)
            row.update(index=info.length, ranges=steps.fetch_bytes, requests=steps.requests,
                       ranges_uncoalesced=apart.fetch_bytes, requests_uncoalesced=apart.requests)
            # The agent takes the full path above 70 %: what it would really fetch.
            worth = delta_worth_it(info.length + steps.fetch_bytes, artifact.length)
            row["delta"] = info.length + steps.fetch_bytes if worth else artifact.length
        rows[role.value] = row
    full = sum(r["full"] for r in rows.values())
    delta = sum(r["delta"] for r in rows.values())
    times = _assembly_times(old_dir, work, old, new, repository)
    return {"old": old.version, "new": new.version, "max_gap": MAX_GAP, "targets": rows, "full_bytes": full,
            "delta_bytes": delta, "share": delta / full, **times}


def _assembly_times(old_dir: Path, work: Path, old: Release, new: Release,
                    repository: Repository) -> dict[str, float]:
    """Seconds to write the new root into a scratch partition by full download and by delta
    (coalesced and not; ranges read from the blob file, and over HTTP from `berth serve`)."""
    artifact: ReleaseArtifact = new.artifacts[ArtifactRole.ROOT]
    targets = work / "repo/targets"
    scratch = work / "slot"
    part = _scratch_partition(scratch, artifact.installed_size)
    start = time.monotonic()
    wire = targets / stored_target_path(artifact.target_path, artifact.sha256)
    write_artifact(str(scratch), part, artifact, lambda offset: _chunks(wire, offset), Progress(),
                   lambda _: None, lambda _: None)
    times = {"root_full_s": round(time.monotonic() - start, 1)}
    info = repository.load("targets").signed.targets[index_path(artifact.target_path)]
    index = BlockIndex.decode((targets / stored_target_path(info.path, info.hashes["sha256"])).read_bytes(),
                              artifact.installed_size, artifact.installed_sha256)
    old_root = old_dir / BUILD_FILES[ArtifactRole.ROOT]
    stored = stored_target_path(blob_path(artifact.target_path), artifact.installed_sha256)
    blob = targets / stored

    def by_delta(max_gap: int, fetch: Callable[[int, int], bytes]) -> float:
        part = _scratch_partition(scratch, artifact.installed_size)
        start = time.monotonic()
        mine = _index(old_root, old.artifacts[ArtifactRole.ROOT].installed_size)  # the host hashes its slot
        assemble(str(scratch), part, artifact, index, plan(index, mine, max_gap),
                 lambda offset, length: _read(old_root, offset, length), fetch, Progress(),
                 lambda _: None, lambda _: None)
        return round(time.monotonic() - start, 1)

    gaps = {"": MAX_GAP, "_uncoalesced": 0}
    for suffix, max_gap in gaps.items():
        times[f"root_delta{suffix}_s"] = by_delta(max_gap, lambda start, end: _read(blob, start, end - start))
    config = write_config(work, {"repository": str(work / "repo"), "admin_token": "bench",
                                 "groups": {"default": {"waves": [{"after": "0s", "percent": 100}]}}})
    with running_server(config, f"sqlite:///{work / 'fleet.sqlite3'}") as server:
        for suffix, max_gap in gaps.items():
            times[f"root_delta{suffix}_http_s"] = by_delta(max_gap, _ranges(f"{server.url}/repo/targets/{stored}"))
    scratch.unlink()
    return times


def _ranges(url: str) -> Callable[[int, int], bytes]:
    """Range requests as the agent makes them: its client, one connection kept for the run."""
    fetcher = RequestsFetcher()

    def fetch(start: int, end: int) -> bytes:
        data = fetcher.range(url, start, end)
        assert data is not None, "berth serve ignored a range request"
        return data

    return fetch


def markdown(label: str, result: dict[str, object]) -> str:
    rows = result["targets"]
    assert isinstance(rows, dict)
    lines = [f"{label}: {result['old']} -> {result['new']}", "",
             "| target | full (bytes) | index | ranges fetched | on the wire by delta |",
             "|---|---:|---:|---:|---:|"]
    for name, row in rows.items():
        lines.append(f"| {name} | {row['full']:,} | {row['index']:,} | {row['ranges']:,} | {row['delta']:,} |")
    share = result["share"]
    assert isinstance(share, float)
    lines.append(f"| **all** | {result['full_bytes']:,} | | | {result['delta_bytes']:,} "
                 f"(**{100 * share:.2f} %**) |")
    lines.append("\n| root by delta | range requests | ranges fetched | assembled (local reads) | "
                 "assembled (ranges from `berth serve`) |")
    lines.append("|---|---:|---:|---:|---:|")
    root = rows["root"]
    assert isinstance(root, dict)
    for name, suffix in ((f"coalesced (gaps < {result['max_gap']} blocks)", ""), ("one request per run", "_uncoalesced")):
        lines.append(f"| {name} | {root['requests' + suffix]:,} | {root['ranges' + suffix]:,} | "
                     f"{result[f'root_delta{suffix}_s']} s | {result[f'root_delta{suffix}_http_s']} s |")
    lines.append(f"\nroot slot by the full download path: {result['root_full_s']} s")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--label", default="update")
    parser.add_argument("--work", type=Path, default=None, help="scratch directory (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.work) as work:
        result = measure(args.old, args.new, Path(work))
    print(markdown(args.label, result))
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[args.label] = result
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
