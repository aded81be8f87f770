"""Make the host what its declaration says (the I/O edge of provisioning).

Every boot: host name, SSH keys, agent settings, TUF root, containers — all
derived again from the declaration kept on /var, so a removed key or
container is gone after the next provisioning. Once per instance: the
instance ID is recorded the first time; when a later boot reports another
one (this disk now runs a different instance), the identity made from the
first boot (SSH host key, the agent's node ID) is removed so it is made anew.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from updater.atomic import atomic_write
from updater.provision import units
from updater.provision.iso9660 import IsoImage
from updater.provision.schema import HostConfig

Run = Callable[[Sequence[str]], subprocess.CompletedProcess[str]]
ARCHIVE_TIMEOUT_S = 120.0
# The metadata service may answer before every NIC has its address: the download
# is retried on connection errors for this long, as the metadata sources are.
ARCHIVE_WAIT_S = 30.0


def fetch_archive(url: str, wait_s: float = ARCHIVE_WAIT_S) -> bytes:
    """A declared archive's bytes from its URL (its #sha256 fragment is not sent)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with urllib.request.urlopen(url.partition("#")[0], timeout=ARCHIVE_TIMEOUT_S) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as error:
            raise FileNotFoundError(f"archive {url}: HTTP {error.code}") from None
        except (urllib.error.URLError, OSError, TimeoutError) as error:
            if time.monotonic() >= deadline:
                raise FileNotFoundError(f"archive {url}: cannot download it ({error})") from None
            time.sleep(1.0)


def run_command(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=120, check=False)


@dataclass(frozen=True)
class HostLayout:
    """Where provisioning writes; a test moves everything under a temporary root."""

    root: Path = Path("/")  # container volumes' host side is below it
    state: Path = Path("/var/lib/berth/host")
    agent_config: Path = Path("/var/lib/berth/agent.yaml")
    node_id: Path = Path("/var/lib/berth/node-id")
    ssh_host_key: Path = Path("/var/lib/ssh/ssh_host_ed25519_key")
    docker_units: Path = units.DOCKER_UNIT_DIR
    quadlets: Path = units.QUADLET_DIR
    engines: Path = Path("/usr/bin")
    hooks: Path = Path("/var/lib/berth/hooks")  # the agent's <state_dir>/hooks

    @classmethod
    def under(cls, root: Path) -> HostLayout:
        return cls(**{name: root / str(path).lstrip("/") for name, path in vars(cls()).items()})

    @property
    def declared(self) -> Path:  # the last good declaration
        return self.state / "declared.json"

    @property
    def status(self) -> Path:
        return self.state / "status.json"

    @property
    def authorized_keys(self) -> Path:  # sshd reads it beside root's own (sshd_config.d/berth.conf)
        return self.state / "authorized_keys"

    @property
    def archives(self) -> Path:
        return self.state / "archives"

    @property
    def tuf_root(self) -> Path:
        return self.state / "tuf-root.json"

    @property
    def server_ca(self) -> Path:
        return self.state / "server-ca.pem"

    @property
    def hooks_written(self) -> Path:  # the hooks the last declaration wrote
        return self.state / "hooks.json"

    @property
    def instance_id(self) -> Path:
        return self.state / "instance-id"

    def engine(self) -> str:
        return "podman" if (self.engines / "podman").exists() and not (self.engines / "docker").exists() else "docker"

    def unit_dir(self, engine: str) -> Path:
        return self.quadlets if engine == "podman" else self.docker_units


def _write(path: Path, text: str | bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(path, text.encode() if isinstance(text, str) else text, mode)
    os.chmod(path, mode)  # an existing file keeps its mode through os.replace otherwise


def keep_instance(layout: HostLayout, instance_id: str, log: Callable[[str], None]) -> None:
    if not instance_id:
        return
    if layout.instance_id.is_file():
        first = layout.instance_id.read_text().strip()
        if first == instance_id:
            return
        log(f"this disk ran instance {first}, now {instance_id}: making a new SSH host key and node ID")
        for path in (layout.ssh_host_key, layout.ssh_host_key.with_suffix(".pub"), layout.node_id):
            path.unlink(missing_ok=True)
    _write(layout.instance_id, instance_id + "\n")


def copy_archives(layout: HostLayout, config: HostConfig, volume: Path | None) -> None:
    """Archives go from the config volume (or their URL) to /var, so the kept
    declaration can start them on a boot without the volume (or the network)."""
    on_volume = {c.archive for c in config.containers if c.archive and not c.archive_sha256}
    if volume is not None and on_volume:
        with volume.open("rb") as handle:
            iso = IsoImage(handle)
            for name in sorted(on_volume):
                data = iso.read(name)
                if data is None:
                    raise FileNotFoundError(f"the config volume holds no '{name}' (declared as an archive)")
                _write(layout.archives / name, data, 0o600)
    for container in config.containers:
        # Named by its digest: one already kept is the same file, never fetched again.
        if container.archive_sha256 and not (layout.archives / container.archive_file).is_file():
            data = fetch_archive(container.archive)
            if hashlib.sha256(data).hexdigest() != container.archive_sha256:
                raise FileNotFoundError(f"archive {container.archive}: the download has another sha256")
            _write(layout.archives / container.archive_file, data, 0o600)
    for name in {c.archive_file for c in config.containers if c.archive}:
        if not (layout.archives / name).is_file():
            raise FileNotFoundError(f"archive '{name}' is neither on a config volume nor kept in {layout.archives}")


def settings_file(config: HostConfig, layout: HostLayout, source: str) -> str:
    values: dict[str, Any] = dict(config.agent) | (config.swarm.settings() if config.swarm else {})
    if config.tuf_root and "trusted_root" not in values:
        values["trusted_root"] = str(layout.tuf_root)
    if config.server_ca and "server_ca" not in values:
        values["server_ca"] = str(layout.server_ca)
    header = f"# Written by `berth provision` from {source} on every boot; declare changes there.\n"
    return header + (yaml.safe_dump(values, sort_keys=True) if values else "{}\n")


def apply_host(config: HostConfig, layout: HostLayout, source: str, set_hostname: bool = True) -> None:
    """Host name, keys, agent settings, TUF root and reboot hooks (not the containers)."""
    if config.hostname and set_hostname:
        socket.sethostname(config.hostname)  # transient: /etc/hostname is on the read-only root
    keys = "".join(f"{key}\n" for key in config.ssh_authorized_keys)
    _write(layout.authorized_keys, "# Written by `berth provision`; declare keys in user-data.\n" + keys, 0o600)
    if config.tuf_root:
        _write(layout.tuf_root, config.tuf_root, 0o644)
    if config.server_ca:
        _write(layout.server_ca, config.server_ca, 0o644)
    _write(layout.agent_config, settings_file(config, layout, source), 0o600)
    apply_hooks(config, layout)


def apply_hooks(config: HostConfig, layout: HostLayout) -> None:
    """The declared reboot hooks written, executable; those an earlier declaration wrote
    and this one no longer declares removed. Hooks put there by hand are left alone."""
    before: set[tuple[str, str]] = set()
    if layout.hooks_written.is_file():
        before = {(stage, name) for stage, name in json.loads(layout.hooks_written.read_text())}
    declared = {(h.stage, h.name): h.script for h in config.hooks}
    for (stage, name), script in declared.items():
        path = layout.hooks / stage / name
        if not path.is_file() or path.read_text() != script or path.stat().st_mode & 0o777 != 0o755:
            _write(path, script, 0o755)
    for stage, name in sorted(before - declared.keys()):
        (layout.hooks / stage / name).unlink(missing_ok=True)
    _write(layout.hooks_written, json.dumps(sorted(declared)) + "\n", 0o600)


def converge(config: HostConfig, layout: HostLayout, run: Run = run_command) -> list[str]:
    """Declared containers run; those no longer declared are stopped and removed.
    Returns what went wrong (a failing unit is the journal's and the unit's to tell)."""
    engine = layout.engine()
    directory = layout.unit_dir(engine)
    directory.mkdir(parents=True, exist_ok=True)
    declared = {c.name: c for c in config.containers}
    present = {name: path for path in directory.iterdir() if (name := units.name_of(path.name)) is not None}
    changed, problems = [], []
    for name, container in declared.items():
        for volume in container.volumes:
            (layout.root / volume.host.lstrip("/")).mkdir(parents=True, exist_ok=True)
        archive = layout.archives / container.archive_file if container.archive else None
        unit = units.unit_file(engine, name)
        text = units.render(engine, container, archive)
        path = directory / unit.filename
        if not path.is_file() or path.read_text() != text:
            _write(path, text)
            changed.append(unit.service)
    removed = [units.unit_file(engine, name) for name in present if name not in declared]
    for unit in removed:
        run(["systemctl", "stop", unit.service])
        (directory / unit.filename).unlink(missing_ok=True)
        run([str(layout.engines / engine), "rm", "-f", unit.service.removeprefix(units.UNIT_PREFIX)
             .removesuffix(".service")])
    if changed or removed:
        run(["systemctl", "daemon-reload"])
    for unit in removed:
        # Stopping `docker run` in the foreground ends it with the container's signal
        # status, which leaves a removed container's unit listed as failed for good.
        run(["systemctl", "reset-failed", unit.service])
    for name in declared:
        service = units.unit_file(engine, name).service
        # restart: a changed declaration takes effect; start: a running one is left alone.
        verb = "restart" if service in changed else "start"
        result = run(["systemctl", verb, "--no-block", service])
        if result.returncode != 0:
            problems.append(f"{service}: systemctl {verb}: {result.stderr.strip()}")
    return problems


def keep(config: HostConfig, layout: HostLayout) -> None:
    _write(layout.declared, json.dumps(config.document(), indent=1, sort_keys=True) + "\n", 0o600)


def last_good(layout: HostLayout) -> dict[str, Any] | None:
    if not layout.declared.is_file():
        return None
    data = json.loads(layout.declared.read_text())
    return data if isinstance(data, dict) else None


def write_status(layout: HostLayout, status: dict[str, Any]) -> None:
    _write(layout.status, json.dumps(status, indent=1, sort_keys=True) + "\n")


def read_status(state_dir: Path) -> dict[str, Any] | None:
    path = state_dir / "host" / "status.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None
