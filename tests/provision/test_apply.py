"""Applying a declaration under a temporary root: files written, units converged,
a bad declaration kept out (systemctl and the engine are recorded, not run)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Sequence
from pathlib import Path

from qemu.file_server import serve_files
from tests.provision.conftest import SeedMaker
from tests.provision.fake_clouds import KEY, Cloud, serve
from updater.agent.settings import load_settings
from updater.provision import units
from updater.provision.apply import HostLayout, read_status, settings_file
from updater.provision.provision import Outcome, provision
from updater.provision.schema import Container, Port, Volume, parse_user_data
from updater.provision.sources import Endpoints

DECLARED = f"""#cloud-config
hostname: web-1
ssh_authorized_keys: ["{KEY}"]
berth:
  agent: {{group: canary}}
  tuf_root: {{"signed": {{"_type": "root"}}, "signatures": []}}
  server_ca: |
    -----BEGIN CERTIFICATE-----
    MIIBfake
    -----END CERTIFICATE-----
  containers:
    - name: web
      image: localhost/berth-busybox:latest
      archive: busybox.tar
      command: [httpd, -f, -p, "8080"]
      ports: ["8080:8080"]
      restart: always
"""


class Host:
    def __init__(self, root: Path, engine: str = "docker") -> None:
        self.root = root
        self.layout = HostLayout.under(root / "host")
        self.layout.engines.mkdir(parents=True)
        (self.layout.engines / engine).touch()
        self.by_label = root / "by-label"
        self.by_label.mkdir()
        self.commands: list[list[str]] = []
        self.lines: list[str] = []

    def run(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        self.commands.append(list(argv))
        return subprocess.CompletedProcess(list(argv), 0, "", "")

    def attach(self, seed: Path | None) -> None:
        link = self.by_label / "cidata"
        link.unlink(missing_ok=True)
        if seed is not None:
            link.symlink_to(seed)

    def provision(self) -> Outcome:
        self.commands.clear()
        return provision(self.layout, None, self.by_label, {"sys_vendor": "QEMU"}, Endpoints(),
                         self.lines.append, run=self.run, set_hostname=False)

    def unit(self, name: str = "web") -> Path:
        return self.layout.docker_units / f"berth-container-{name}.service"


def test_declared_then_bad_then_removed(tmp_path: Path, make_seed: SeedMaker) -> None:
    host = Host(tmp_path)
    host.attach(make_seed(DECLARED, extra={"busybox.tar": b"archive bytes"}))
    outcome = host.provision()
    assert (outcome.source, outcome.applied, outcome.errors, outcome.containers) == ("nocloud", "declared", [], ["web"])
    layout = host.layout
    assert layout.authorized_keys.read_text().splitlines()[1:] == [KEY]
    settings = layout.agent_config.read_text()
    assert "group: canary" in settings and f"trusted_root: {layout.tuf_root}" in settings
    assert f"server_ca: {layout.server_ca}" in settings
    assert layout.server_ca.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert '"_type": "root"' in layout.tuf_root.read_text()
    assert (layout.archives / "busybox.tar").read_bytes() == b"archive bytes"
    assert layout.instance_id.read_text() == "iid-seed-1\n"
    unit = host.unit().read_text()
    assert f"ExecStartPre=/usr/bin/docker load -i {layout.archives}/busybox.tar" in unit
    assert "ExecStart=/usr/bin/docker run --rm --name web --label berth.declared=true -p 8080:8080/tcp " \
           "localhost/berth-busybox:latest httpd -f -p 8080" in unit
    assert ["systemctl", "daemon-reload"] in host.commands
    assert ["systemctl", "restart", "--no-block", "berth-container-web.service"] in host.commands

    # The same declaration again: nothing rewritten, the running container left alone.
    host.provision()
    assert host.commands == [["systemctl", "start", "--no-block", "berth-container-web.service"]]

    # A bad declaration: the last good one stays applied (keys, settings, unit) and the error is told.
    host.attach(make_seed("#cloud-config\nhostname: web-1\nberth: {containers: [{name: web}]}\n"))
    outcome = host.provision()
    assert outcome.applied == "last good" and outcome.containers == ["web"]
    assert "'image' is required; keeping the last good declaration" in outcome.errors[0]
    assert any(line.startswith("error: ") for line in host.lines)
    assert layout.authorized_keys.read_text().splitlines()[1:] == [KEY] and host.unit().is_file()
    status = read_status(layout.state.parent)
    assert status is not None and status["applied"] == "last good" and status["errors"] == outcome.errors

    # No source at all (the seed detached): the kept declaration is applied again.
    host.attach(None)
    assert host.provision().applied == "last good"

    # The container dropped from the declaration: stopped, its unit and container removed.
    host.attach(make_seed("#cloud-config\nhostname: web-1\n"))
    outcome = host.provision()
    assert outcome.applied == "declared" and outcome.containers == []
    assert not host.unit().exists()
    assert ["systemctl", "stop", "berth-container-web.service"] in host.commands
    assert [str(layout.engines / "docker"), "rm", "-f", "web"] in host.commands
    # ... and not left among the failed units (its stop ends `docker run` with a signal's status).
    assert host.commands.index(["systemctl", "daemon-reload"]) < host.commands.index(
        ["systemctl", "reset-failed", "berth-container-web.service"])
    assert json.loads(layout.declared.read_text())["containers"] == []


def test_missing_archive_is_a_bad_declaration(tmp_path: Path, make_seed: SeedMaker) -> None:
    host = Host(tmp_path)
    host.attach(make_seed(DECLARED))
    outcome = host.provision()
    assert outcome.applied == "defaults" and "holds no 'busybox.tar'" in outcome.errors[0]
    assert not host.unit().exists()


def test_a_new_instance_gets_a_new_identity(tmp_path: Path, make_seed: SeedMaker) -> None:
    host = Host(tmp_path)
    layout = host.layout
    host.attach(make_seed("{}\n"))
    host.provision()
    for path in (layout.ssh_host_key, layout.node_id):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("first boot's\n")
    host.provision()
    assert layout.ssh_host_key.exists() and layout.node_id.exists()  # same instance: kept
    host.attach(make_seed("{}\n", meta_data="instance-id: iid-other\n"))
    host.provision()
    assert not layout.ssh_host_key.exists() and not layout.node_id.exists()
    assert layout.instance_id.read_text() == "iid-other\n"


def test_units_quote_and_quadlet() -> None:
    container = Container(name="app", image="docker.io/library/nginx:1.27",
                          command=("sh", "-c", 'echo "$HOME 100%"'), env=(("A", "b c"),),
                          ports=(Port(80, 8080),), volumes=(Volume("/var/lib/app", "/data", True),),
                          restart="on-failure")
    docker = units.docker_unit(container, None)
    assert 'sh -c "echo \\"$$HOME 100%%\\""' in docker and '-e "A=b c"' in docker
    assert "Restart=on-failure" in docker and "docker load" not in docker
    quadlet = units.quadlet_unit(container, Path("/var/lib/berth/host/archives/app.tar"))
    assert "ContainerName=app\nImage=docker.io/library/nginx:1.27\n" in quadlet
    assert "PublishPort=80:8080/tcp\nVolume=/var/lib/app:/data:ro\n" in quadlet
    assert "ExecStartPre=/usr/bin/podman load -i /var/lib/berth/host/archives/app.tar" in quadlet
    assert units.unit_file("podman", "app").filename == "berth-container-app.container"
    assert units.name_of("berth-container-app.container") == "app" and units.name_of("docker.service") is None


def test_podman_host_writes_quadlets(tmp_path: Path, make_seed: SeedMaker) -> None:
    host = Host(tmp_path, engine="podman")
    host.attach(make_seed("containers: [{name: db, image: docker.io/library/redis:7, volumes: ['/var/lib/db:/data']}]\n"))
    assert host.provision().errors == []
    assert (tmp_path / "host/var/lib/db").is_dir()  # made below the layout's root, not on this machine
    assert (host.layout.quadlets / "berth-container-db.container").is_file()
    assert ["systemctl", "restart", "--no-block", "berth-container-db.service"] in host.commands


def test_declared_hooks_are_written_executable_and_removed_when_no_longer_declared(tmp_path: Path) -> None:
    from updater.provision.apply import apply_hooks
    from updater.provision.schema import parse_document

    layout = HostLayout.under(tmp_path)
    by_hand = layout.hooks / "pre-reboot" / "50-mine"
    by_hand.parent.mkdir(parents=True)
    by_hand.write_text("#!/bin/sh\n")
    both = parse_document({"hooks": {"pre-reboot": {"10-drain": "#!/bin/sh\ndrain\n"},
                                     "post-bless": {"10-up": "#!/bin/sh\nup\n"}}}, "d")
    apply_hooks(both, layout)
    drain = layout.hooks / "pre-reboot" / "10-drain"
    assert drain.read_text() == "#!/bin/sh\ndrain\n" and drain.stat().st_mode & 0o777 == 0o755
    assert (layout.hooks / "post-bless" / "10-up").is_file()
    drain.chmod(0o644)  # someone changed it by hand: the declaration wins again
    apply_hooks(both, layout)
    assert drain.stat().st_mode & 0o777 == 0o755
    apply_hooks(parse_document({"hooks": {"post-bless": {"10-up": "#!/bin/sh\nup\n"}}}, "d"), layout)
    assert not drain.exists() and (layout.hooks / "post-bless" / "10-up").is_file()
    apply_hooks(parse_document({}, "d"), layout)
    assert not (layout.hooks / "post-bless" / "10-up").exists()
    assert by_hand.is_file()  # never provisioning's


def test_the_swarm_declaration_becomes_the_agents_settings(tmp_path: Path) -> None:
    config = parse_user_data(b"agent: {group: edge}\nswarm: {role: manager, labels: {zone: west}}\n", "user-data")
    layout = HostLayout.under(tmp_path)
    layout.agent_config.parent.mkdir(parents=True)
    layout.agent_config.write_text(settings_file(config, layout, "nocloud"))
    settings = load_settings(layout.agent_config, None)
    assert (settings.group, settings.swarm_role, settings.swarm_labels, settings.swarm_advertise_addr) == (
        "edge", "manager", {"zone": "west"}, "")


def test_an_archive_by_url_is_fetched_once_checked_and_kept(tmp_path: Path) -> None:
    """A cloud host has no config volume: its declaration names the archive by URL."""
    archive = b"docker-archive bytes"
    digest = hashlib.sha256(archive).hexdigest()
    fetched: list[str] = []
    with serve_files({"/busybox.tar": archive}, fetched) as port:
        url = f"http://127.0.0.1:{port}/busybox.tar"

        def declared(sha256: str) -> bytes:
            return (f"#cloud-config\nberth:\n  containers:\n    - name: web\n      image: localhost/b:latest\n"
                    f"      archive: {url}#sha256={sha256}\n").encode()

        host = Host(tmp_path)
        cloud = Cloud(declared(digest))
        with serve("ec2", cloud) as base:
            def run() -> Outcome:
                return provision(host.layout, None, host.by_label, {"sys_vendor": "Amazon EC2"},
                                 Endpoints(metadata=base), host.lines.append, run=host.run, set_hostname=False)

            outcome = run()
            assert (outcome.source, outcome.applied, outcome.errors) == ("ec2", "declared", [])
            kept = host.layout.archives / f"sha256-{digest}.tar"
            assert kept.read_bytes() == archive and fetched == ["/busybox.tar"]
            assert f"ExecStartPre=/usr/bin/docker load -i {kept}" in host.unit().read_text()
            run()  # the kept file is the pinned one: not fetched again
            assert fetched == ["/busybox.tar"]

            cloud.user_data = declared("0" * 64)  # the download is not what was pinned
            outcome = run()
            assert outcome.applied == "last good" and "another sha256" in outcome.errors[0]
            assert not (host.layout.archives / f"sha256-{'0' * 64}.tar").exists()
        assert cloud.refused == []
