"""Declared containers as systemd units (pure: text out, no I/O).

docker: a service running ``docker run --rm`` in the foreground, so systemd
owns the restart policy and a stopped unit leaves no container behind.
podman: a Quadlet ``.container`` file; podman's generator turns it into the
service at daemon-reload. Both live under /run (the root, /etc included, is
read-only): ``berth provision`` writes them on every boot from the declaration
kept on /var, so what is not declared any more is simply not there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from updater.provision.schema import Container

UNIT_PREFIX = "berth-container-"
DOCKER_UNIT_DIR = Path("/run/systemd/system")
QUADLET_DIR = Path("/run/containers/systemd")
LABEL = "berth.declared=true"


@dataclass(frozen=True)
class UnitFile:
    directory: Path
    filename: str  # what is written
    service: str  # what systemctl starts

    @property
    def path(self) -> Path:
        return self.directory / self.filename


def unit_file(engine: str, name: str) -> UnitFile:
    service = f"{UNIT_PREFIX}{name}.service"
    if engine == "podman":
        return UnitFile(QUADLET_DIR, f"{UNIT_PREFIX}{name}.container", service)
    return UnitFile(DOCKER_UNIT_DIR, service, service)


def name_of(filename: str) -> str | None:
    """The container a unit file written by berth is for; None for other files."""
    for suffix in (".service", ".container"):
        if filename.startswith(UNIT_PREFIX) and filename.endswith(suffix):
            return filename[len(UNIT_PREFIX):-len(suffix)]
    return None


def quote(argument: str) -> str:
    """One argument on a unit's Exec line: systemd's own quoting, % and $ escaped."""
    escaped = argument.replace("%", "%%").replace("$", "$$")
    if escaped and not any(c in escaped for c in ' \t"\'\\;'):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _line(*arguments: str) -> str:
    return " ".join(quote(a) for a in arguments)


def docker_unit(container: Container, archive: Path | None) -> str:
    run = ["/usr/bin/docker", "run", "--rm", "--name", container.name, "--label", LABEL]
    for port in container.ports:
        run += ["-p", str(port)]
    for volume in container.volumes:
        run += ["-v", str(volume)]
    for key, value in container.env:
        run += ["-e", f"{key}={value}"]
    run += [container.image, *container.command]
    load = [f"ExecStartPre={_line('/usr/bin/docker', 'load', '-i', str(archive))}"] if archive else []
    return "\n".join([
        "# Written by `berth provision` from the host's declaration; do not edit.",
        "[Unit]",
        f"Description=berth declared container {container.name}",
        "Requires=docker.service",
        "After=docker.service network-online.target",
        "",
        "[Service]",
        # A container left over from a killed run would make `docker run --name` fail.
        f"ExecStartPre=-{_line('/usr/bin/docker', 'rm', '-f', container.name)}",
        *load,
        f"ExecStart={_line(*run)}",
        f"ExecStop={_line('/usr/bin/docker', 'stop', container.name)}",
        f"Restart={container.restart}",
        "RestartSec=5s",
        # A registry pull may take long; never on the way of booting.
        "TimeoutStartSec=15min",
        "",
    ])


def quadlet_unit(container: Container, archive: Path | None) -> str:
    lines = [
        "# Written by `berth provision` from the host's declaration; do not edit.",
        "[Unit]",
        f"Description=berth declared container {container.name}",
        "",
        "[Container]",
        f"ContainerName={container.name}",
        f"Image={container.image}",
        f"Label={LABEL}",
        *[f"PublishPort={port}" for port in container.ports],
        *[f"Volume={volume}" for volume in container.volumes],
        *[f"Environment={quote(f'{key}={value}')}" for key, value in container.env],
    ]
    if container.command:
        lines.append(f"Exec={_line(*container.command)}")
    lines += ["", "[Service]"]
    if archive:
        lines.append(f"ExecStartPre={_line('/usr/bin/podman', 'load', '-i', str(archive))}")
    lines += [f"Restart={container.restart}", "RestartSec=5s", "TimeoutStartSec=15min", ""]
    return "\n".join(lines)


def render(engine: str, container: Container, archive: Path | None) -> str:
    return quadlet_unit(container, archive) if engine == "podman" else docker_unit(container, archive)
