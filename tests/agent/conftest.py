"""A host on files: a real GPT disk image with A/B slots, an ESP directory, a TUF
repository published with `berth publish` and served over HTTP on 127.0.0.1,
and a model of systemd-boot that says which slot the host would boot.

The ESP is a plain directory: the kernel here cannot mount vfat, and the agent
only sees the ESP through its mount point anyway.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cmp_to_key
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from builder.layout import verity_size
from updater import contract
from updater.publish.repository import init_keys

REPO_ROOT = Path(__file__).resolve().parents[2]
RECORD_TRIAL_FAILURE = REPO_ROOT / "updater/agent/image/usr/lib/berth/record-trial-failure"
SLOT_MIB = 16  # root slot; its verity slot is sized as the builder sizes it


def verity_mib(slot_mib: int) -> int:
    return verity_size(slot_mib << 20) >> 20


ROOT_TYPES = contract.ROOT_TYPES["x86_64"]
TYPES = {
    "esp": contract.TYPE_ESP,
    "root": ROOT_TYPES.root,
    "verity": ROOT_TYPES.verity,
    "var": contract.TYPE_VAR,
}


# ---- releases ------------------------------------------------------------------------


@dataclass(frozen=True)
class BuiltRelease:
    version: str
    directory: Path
    roothash: str
    uki_sha256: str


def build_release(out: Path, version: str, blob_bytes: int = 5 << 20, slot_mib: int = SLOT_MIB,
                  whole_slot: bool = False, blob: bytes | None = None,
                  uki_tail: bytes | None = None) -> BuiltRelease:
    """A small real release: erofs root, real dm-verity tree, a stand-in UKI, manifest.json.

    ``whole_slot``: as `berth build` makes them, the root image (the erofs alone, not its
    slot) hashed in 4 KiB blocks like builder/verity.py, and the verity image is the whole
    verity slot. ``blob``: the contents of its big file (default: random,
    so that no two releases share it); ``uki_tail`` the same for the stand-in UKI's bytes after
    its command line."""
    directory = out / contract.artifact_name("berth", version)
    src = out / f"src-{version}"
    (src / "usr/lib").mkdir(parents=True)
    (src / "usr/lib/os-release").write_text(f"IMAGE_ID=berth\nIMAGE_VERSION={version}\n")
    (src / "blob").write_bytes(os.urandom(blob_bytes // 2) + bytes(blob_bytes // 2) if blob is None else blob)
    directory.mkdir(parents=True)
    subprocess.run(["mkfs.erofs", "--quiet", "-T0", str(directory / contract.ROOT_IMAGE), str(src)], check=True)
    blocks = ["--data-block-size=4096", "--hash-block-size=4096"] if whole_slot else []
    out_text = subprocess.run(
        ["veritysetup", "format", *blocks, str(directory / contract.ROOT_IMAGE),
         str(directory / contract.VERITY_IMAGE)],
        check=True, capture_output=True, text=True,
    ).stdout
    if whole_slot:
        os.truncate(directory / contract.VERITY_IMAGE, verity_mib(slot_mib) << 20)
    roothash = re.search(r"Root hash:\s+([0-9a-f]{64})", out_text)[1]  # type: ignore[index]
    # A stand-in for a UKI: what matters to the boot path is its .cmdline (roothash=).
    uki = b"MZ" + bytes(510) + f".cmdline\0roothash={roothash} console=ttyS0\0".encode() + (
        os.urandom(4096) if uki_tail is None else uki_tail)
    (directory / contract.UKI).write_bytes(uki)
    artifacts = {
        name: contract.Artifact((directory / name).stat().st_size,
                                hashlib.sha256((directory / name).read_bytes()).hexdigest())
        for name in contract.RELEASE_ARTIFACTS
    }
    manifest = contract.Manifest(
        image_id="berth", version=version, engine="docker", roothash=roothash, slot_size=slot_mib << 20,
        verity_slot_size=verity_mib(slot_mib) << 20, artifacts=artifacts,
    )
    (directory / contract.MANIFEST).write_text(manifest.to_json())
    shutil.rmtree(src)
    return BuiltRelease(version, directory, roothash, artifacts[contract.UKI].sha256)


@pytest.fixture(scope="session")
def releases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BuiltRelease]:
    out = tmp_path_factory.mktemp("releases")
    return {v: build_release(out, v) for v in ("1.0", "1.1", "1.2")}


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    keys = tmp_path_factory.mktemp("keys") / "keys"
    init_keys(keys, {"root": 1, "targets": 1, "snapshot": 1, "timestamp": 1})
    return keys


def publish(repo_dir: Path, keys: Path, release: BuiltRelease, *extra: str) -> None:
    """Through the real CLI, as an operator would."""
    berth(["publish", str(release.directory), "--repo", str(repo_dir), "--keys", str(keys),
           "--frame-mib", "1", "--zstd-level", "3", *extra])


def berth(args: list[str], env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=REPO_ROOT, text=True,
                          capture_output=True, check=check, env={**os.environ, **(env or {})}, timeout=300)


# ---- HTTP ----------------------------------------------------------------------------


@dataclass
class Server:
    root: Path
    url: str
    # path suffix -> bytes to send before dropping the connection (a server that stops)
    cut_after: dict[str, int] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    bytes_sent: int = 0
    ranges: bool = True  # False: answer range requests with the whole file, as some servers do


def _handler(server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            server.log.append(self.path)
            path = (server.root / self.path.lstrip("/")).resolve()
            if not path.is_file() or server.root.resolve() not in path.parents:
                self.send_error(404)
                return
            size = path.stat().st_size
            start, end = 0, size
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
            if match and server.ranges:
                start, end = int(match[1]), min(size, int(match[2] or size - 1) + 1)
                if start >= size or end <= start:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
            else:
                self.send_response(200)
            length = end - start
            self.send_header("Content-Length", str(length))
            self.end_headers()
            suffix = next((s for s in server.cut_after if self.path.endswith(s)), None)
            if suffix is not None:
                length = min(length, server.cut_after.pop(suffix))
                self.close_connection = True
            with open(path, "rb") as handle:
                handle.seek(start)
                while length > 0:
                    block = handle.read(min(length, 1 << 20))
                    if not block:
                        break
                    self.wfile.write(block)
                    server.bytes_sent += len(block)
                    length -= len(block)

    return Handler


def start_server(root: Path) -> tuple[Server, ThreadingHTTPServer]:
    """A threaded static server on 127.0.0.1 with range requests (and cut-offs on demand)."""
    root.mkdir(exist_ok=True)
    state = Server(root, "")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return state, httpd


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    state, httpd = start_server(tmp_path / "served")
    yield state
    httpd.shutdown()
    httpd.server_close()


# ---- the disk and systemd-boot -------------------------------------------------------


def sfdisk_json(disk: Path) -> list[dict]:
    out = subprocess.run(["sfdisk", "--json", str(disk)], check=True, capture_output=True, text=True).stdout
    return json.loads(out)["partitiontable"]["partitions"]


def make_disk(path: Path, first: BuiltRelease, slot_mib: int = SLOT_MIB) -> None:
    """GPT as the builder lays it out: ESP, root A + verity A (holding ``first``), empty B, var."""
    root_uuid, verity_uuid = contract.uuids_from_roothash(first.roothash)
    root_label, verity_label = contract.slot_labels("berth", first.version)
    lines = [
        "label: gpt",
        f"size=8MiB, type={TYPES['esp']}, name={contract.ESP_LABEL}",
        f"size={slot_mib}MiB, type={TYPES['root']}, name={root_label}, uuid={root_uuid}",
        f"size={verity_mib(slot_mib)}MiB, type={TYPES['verity']}, name={verity_label}, uuid={verity_uuid}",
        f"size={slot_mib}MiB, type={TYPES['root']}, name={contract.EMPTY_LABEL}",
        f"size={verity_mib(slot_mib)}MiB, type={TYPES['verity']}, name={contract.EMPTY_LABEL}",
        f"size=4MiB, type={TYPES['var']}, name={contract.VAR_LABEL}",
    ]
    with open(path, "wb") as handle:
        handle.truncate((2 * (slot_mib + verity_mib(slot_mib)) + 16) << 20)
    subprocess.run(["sfdisk", "--quiet", str(path)], input="\n".join(lines) + "\n", text=True, check=True)
    parts = sfdisk_json(path)
    with open(path, "r+b") as handle:
        for part, name in ((parts[1], contract.ROOT_IMAGE), (parts[2], contract.VERITY_IMAGE)):
            handle.seek(part["start"] * 512)
            handle.write((first.directory / name).read_bytes())


def _entry(name: str) -> contract.BootEntry:
    entry = contract.BootEntry.parse(name)
    assert entry, name
    return entry


def _menu_key(name: str) -> tuple[bool, list[int], int, int]:
    entry = _entry(name)
    left = entry.tries_left if entry.tries_left is not None else -1
    return (left == 0, [-int(p) for p in entry.version.split(".")], -left, entry.tries_done)


def systemd_boot_menu(esp: Path) -> list[str]:
    """Entries in systemd-boot's order (sd-boot's boot_entry_compare for same-IMAGE_ID UKIs):
    no tries left sorts last, then newest version first, then more tries left, fewer done."""
    names = [p.name for p in (esp / contract.UKI_DIR).iterdir() if p.name.endswith(".efi")]
    return sorted(names, key=cmp_to_key(lambda a, b: (_menu_key(a) > _menu_key(b)) - (_menu_key(a) < _menu_key(b))))


@dataclass
class Host:
    """A host on files: what the agent reads, and what the firmware would boot."""

    root: Path
    disk: Path
    esp: Path
    state_dir: Path
    releases: dict[str, BuiltRelease]
    reboots: Path

    def settings(self, **values: object) -> None:
        config = self.root / "etc/berth/agent.yaml"
        current = yaml.safe_load(config.read_text()) if config.exists() else {}
        config.write_text(yaml.safe_dump({**current, **values}))

    def agent(self, *args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = berth(["agent", "--host-root", str(self.root), *args], env=env, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"agent exited {result.returncode}:\n{result.stderr}")
        return result

    def state(self) -> dict:
        path = self.state_dir / "state.json"
        return json.loads(path.read_text()) if path.exists() else {"state": "idle", "bad_versions": []}

    def entries(self) -> list[str]:
        return systemd_boot_menu(self.esp)

    def booted_version(self) -> str:
        text = (self.root / "etc/os-release").read_text()
        return re.search(r"IMAGE_VERSION=(\S+)", text)[1]  # type: ignore[index]

    def verified_boot(self) -> str:
        """The version systemd-boot would boot now, after checking it is a whole, verified slot."""
        menu = self.entries()
        assert menu, "no boot entry at all"
        chosen = self.esp / contract.UKI_DIR / menu[0]
        uki = chosen.read_bytes()
        assert hashlib.sha256(uki).hexdigest() in {r.uki_sha256 for r in self.releases.values()}, chosen
        roothash = re.search(rb"roothash=([0-9a-f]{64})", uki)[1].decode()  # type: ignore[index]
        parts = {p["uuid"].lower(): p for p in sfdisk_json(self.disk)}
        root_uuid, verity_uuid = contract.uuids_from_roothash(roothash)
        root, verity = parts.get(root_uuid), parts.get(verity_uuid)
        assert root and verity, f"{chosen.name}: no partitions carry the UUIDs of its root hash"
        assert root["type"].lower() == TYPES["root"] and verity["type"].lower() == TYPES["verity"]
        scratch = self.root.parent / "verify"
        scratch.mkdir(exist_ok=True)
        with open(self.disk, "rb") as handle:
            for part, name in ((root, "root"), (verity, "verity")):
                handle.seek(part["start"] * 512)
                (scratch / name).write_bytes(handle.read(part["size"] * 512))
        subprocess.run(["veritysetup", "verify", str(scratch / "root"), str(scratch / "verity"), roothash],
                       check=True, capture_output=True)
        version = _entry(chosen.name).version
        assert root["name"] == contract.slot_labels("berth", version)[0]
        return version

    def boot(self) -> str:
        """Power on: systemd-boot counts the chosen entry down and boots it."""
        version = self.verified_boot()
        name = self.entries()[0]
        entry = _entry(name)
        if entry.tries_left is not None and entry.tries_left > 0:
            renamed = (f"{contract.artifact_name(entry.image_id, entry.version)}"
                       f"+{entry.tries_left - 1}-{entry.tries_done + 1}.efi")
            (self.esp / contract.UKI_DIR / name).rename(self.esp / contract.UKI_DIR / renamed)
        self._set_booted(self.releases[version])
        return version

    def bless(self) -> None:
        """systemd-bless-boot after boot-complete.target: drop the counter of the booted entry."""
        version = self.booted_version()
        for name in self.entries():
            entry = _entry(name)
            if entry.version == version and entry.tries_left is not None:
                blessed = contract.uki_filename(entry.image_id, version)
                (self.esp / contract.UKI_DIR / name).rename(self.esp / contract.UKI_DIR / blessed)

    def fail_check(self, unit: str = "berth-check-user.service") -> None:
        """A health check fails on this boot on trial: berth-trial-failed.service's own
        record-trial-failure writes it down before rebooting."""
        subprocess.run([str(RECORD_TRIAL_FAILURE)], check=True, capture_output=True, env={
            **os.environ, "MONITOR_UNIT": unit, "BERTH_CMDLINE": str(self.root / "proc/cmdline"),
            "BERTH_TRIAL_FAILURES": str(self.state_dir / "trial-failures"),
        })

    def panic(self) -> None:
        """The kernel panics on this boot; on the next, systemd-pstore moves the record
        efi-pstore kept to /var/lib/systemd/pstore/<record id>/ (a fake: no kernel here)."""
        record = self.root / "var/lib/systemd/pstore" / str(time.time_ns())
        record.mkdir(parents=True)
        (record / "dmesg.txt").write_text("Kernel panic - not syncing: Attempted to kill init!\n")

    def _set_booted(self, release: BuiltRelease) -> None:
        (self.root / "proc/cmdline").write_text(f"roothash={release.roothash} console=ttyS0\n")
        (self.root / "etc/os-release").write_text(f"IMAGE_ID=berth\nIMAGE_VERSION={release.version}\n")

    def fingerprint(self) -> tuple[str, list[str], list[dict]]:
        """The disk's bytes, the ESP's entries and the partition table, to prove nothing changed."""
        digest = hashlib.sha256(self.disk.read_bytes()).hexdigest()
        return digest, self.entries(), sfdisk_json(self.disk)

    def booted_fingerprint(self) -> tuple[bytes, list[str], list[dict]]:
        """What the running system depends on: slot a's bytes, the ESP, slot a's table entries."""
        parts = sfdisk_json(self.disk)
        with open(self.disk, "rb") as handle:
            data = b""
            for part in parts[1:3]:
                handle.seek(part["start"] * 512)
                data += hashlib.sha256(handle.read(part["size"] * 512)).digest()
        return data, self.entries(), parts[:3]

    def slot_b(self, version: str) -> list[bytes]:
        """What slot b's root and verity partitions hold, as long as ``version``'s images."""
        parts = sfdisk_json(self.disk)
        found = []
        with open(self.disk, "rb") as disk:
            for part, name in ((parts[3], "root.erofs"), (parts[4], "root.verity")):
                disk.seek(part["start"] * 512)
                found.append(disk.read((self.releases[version].directory / name).stat().st_size))
        return found

    def snapshot(self, name: str) -> Path:
        """Copy the whole host (files and disk) aside, to restore it after each power cut."""
        target = self.root.parent / f"snapshot-{name}"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(self.root, target / "host", symlinks=True)
        shutil.copyfile(self.disk, target / "disk.raw")
        return target

    def restore(self, snapshot: Path) -> None:
        shutil.rmtree(self.root)
        shutil.copytree(snapshot / "host", self.root, symlinks=True)
        shutil.copyfile(snapshot / "disk.raw", self.disk)

    def rebooted(self) -> int:
        return len(self.reboots.read_text().splitlines()) if self.reboots.exists() else 0


@pytest.fixture(scope="session")
def base_disk(tmp_path_factory: pytest.TempPathFactory, releases: dict[str, BuiltRelease]) -> Path:
    path = tmp_path_factory.mktemp("disk") / "disk.raw"
    make_disk(path, releases["1.0"])
    return path


@pytest.fixture
def cli():
    """cli([...]): run `berth ...` in a subprocess, raising if it fails."""
    return berth


@pytest.fixture
def publish_release(keys_dir: Path, server: Server, releases: dict[str, BuiltRelease]):
    """publish_release("1.2", *flags): `berth publish` a built release into the served repository."""
    return lambda version, *extra: publish(server.root / "repo", keys_dir, releases[version], *extra)


@pytest.fixture
def repo(tmp_path: Path, keys_dir: Path, server: Server, releases: dict[str, BuiltRelease]) -> Path:
    """A repository with 1.0 and 1.1, served at <server.url>/repo."""
    repo_dir = server.root / "repo"
    for version in ("1.0", "1.1"):
        publish(repo_dir, keys_dir, releases[version])
    return repo_dir


def make_host(base: Path, base_disk: Path, releases: dict[str, BuiltRelease], repo_url: str,
              trusted_root: Path) -> Host:
    """A host booted from 1.0 in slot a, its agent configured to poll ``repo_url``."""
    root = base / "host"
    for directory in ("proc", "etc/berth", "esp/EFI/Linux", "var/lib/berth"):
        (root / directory).mkdir(parents=True)
    disk = base / "disk.raw"
    shutil.copyfile(base_disk, disk)
    (root / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
    shutil.copyfile(releases["1.0"].directory / "uki.efi", root / "esp/EFI/Linux/berth_1.0.efi")
    shutil.copyfile(trusted_root, root / "etc/berth/tuf-root.json")
    h = Host(root, disk, root / "esp", root / "var/lib/berth", releases, base / "reboots")
    h._set_booted(releases["1.0"])
    h.settings(
        repo_url=repo_url, state_dir=str(h.state_dir), esp=str(h.esp), disk=str(disk),
        trusted_root=str(root / "etc/berth/tuf-root.json"), poll_interval_s=1, bless_timeout_s=3600,
        pstore_dir=str(root / "var/lib/systemd/pstore"),
        reboot_command=f"sh -c 'echo reboot >> {h.reboots}'",
    )
    return h


@pytest.fixture
def host(tmp_path: Path, base_disk: Path, releases: dict[str, BuiltRelease], server: Server, repo: Path) -> Host:
    return make_host(tmp_path, base_disk, releases, f"{server.url}/repo", repo / "metadata/root.json")


@pytest.fixture
def host_of(tmp_path: Path, base_disk: Path, releases: dict[str, BuiltRelease], server: Server):
    """host_of(repo_dir): a host booted from 1.0 whose agent polls ``repo_dir`` (served)."""
    def make(repo_dir: Path) -> Host:
        url = f"{server.url}/{repo_dir.relative_to(server.root)}"
        return make_host(tmp_path, base_disk, releases, url, repo_dir / "metadata/root.json")

    return make


@pytest.fixture(scope="session")
def similar(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BuiltRelease]:
    """1.0 and 1.1 with the same 6 MiB file (1.1 differs in its os-release) and nearly the same
    UKI (its roothash= differs), and 1.2 unlike both."""
    out = tmp_path_factory.mktemp("similar")
    shared, tail = os.urandom(6 << 20), os.urandom(256 << 10)
    return {
        "1.0": build_release(out, "1.0", blob=shared, uki_tail=tail),
        "1.1": build_release(out, "1.1", blob=shared, uki_tail=tail),
        "1.2": build_release(out, "1.2", blob=os.urandom(6 << 20)),
    }


@pytest.fixture
def delta_host(tmp_path: Path, similar: dict[str, BuiltRelease], server: Server, keys_dir: Path) -> Host:
    repo = server.root / "repo"
    for version in ("1.0", "1.1"):
        publish(repo, keys_dir, similar[version])
    disk = tmp_path / "base.raw"
    make_disk(disk, similar["1.0"])
    return make_host(tmp_path, disk, similar, f"{server.url}/repo", repo / "metadata/root.json")
