"""Booted VMs for the image tests: one per engine, shared by every test that reads it.

Built images come from the session fixtures in tests/conftest.py (the builder's);
booting is what is done here, once per session for each variant. Each boot is
provisioned too, from a different source: the docker host by a NoCloud seed, the
podman host as an EC2 instance by the FAKE IMDSv2 (tests/provision/fake_clouds.py)
served at 169.254.169.254; their provisioning figures are printed at the end. The podman
host is also a fleet host of a real `berth serve` (qemu/lab.py), which the last of its tests
uses to update it to a release the rotated Secure Boot key signed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from qemu.container_image import write_busybox_archive
from qemu.file_server import serve_files
from qemu.harness import VM, free_port
from qemu.lab import Enrolment, Lab, lab_group
from qemu.machine import HOST_SERVICES_ADDRESS, Forward
from qemu.milestones import Milestones
from qemu.ready import Ready
from qemu.seed import (
    EXAMPLE_ARCHIVE,
    EXAMPLE_GROUP,
    EXAMPLE_HOSTNAME,
    EXAMPLE_PAGE,
    EXAMPLE_PORT,
    example_user_data,
    write_seed,
)
from qemu.ssh import ensure_key
from tests.provision.fake_clouds import Cloud, serve

# The guest reaches the host's test service at 10.0.2.100:HOST_SERVICE_GUEST_PORT.
HOST_SERVICE_GUEST_PORT = 8080
HOST_SERVICE_BODY = b"berth host service\n"
# Not berth.*: the agent imports those and refuses names it does not know.
PROBE_CREDENTIAL = ("probe.token", "provisioned-through-smbios")
# The podman host is an EC2 instance: what DMI shows on EC2 (sys_vendor, product_name).
EC2_SYSTEM = {"manufacturer": "Amazon EC2", "product": "t3.micro"}
IMDS_HOSTNAME = "berth-imds"
IMDS_INSTANCE_ID = "i-0berthimds0000001"
# It has no config volume: its declaration names the archive by URL, served here.
ARCHIVE_GUEST_PORT = 8081
# ... and its fleet server at this port (the docker host has none).
FLEET_GUEST_PORT = 8082
FIGURES = pytest.StashKey[dict[str, dict[str, object]]]()


class _Answer(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(HOST_SERVICE_BODY)))
        self.end_headers()
        self.wfile.write(HOST_SERVICE_BODY)

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass(frozen=True)
class HostService:
    host_port: int
    guest_url: str  # where the guest finds it
    body: bytes


@pytest.fixture(scope="session")
def host_service() -> Iterator[HostService]:
    """A real HTTP server on the host's 127.0.0.1, forwarded to the guests."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield HostService(
        host_port=int(server.server_address[1]),
        guest_url=f"http://{HOST_SERVICES_ADDRESS}:{HOST_SERVICE_GUEST_PORT}/",
        body=HOST_SERVICE_BODY,
    )
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def busybox_archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A registry-free container image (docker-archive tar) and its tag."""
    path = tmp_path_factory.mktemp("container") / "busybox.tar"
    return path, write_busybox_archive(path)


@dataclass(frozen=True)
class Provisioning:
    """Where a boot's declaration comes from (source: the name the host reports)."""

    source: str
    declared_key: Path  # the private half of the key the declaration gives
    hostname: str  # the one it declares
    seed: Path | None = None
    cloud: Cloud | None = None  # the fake metadata service, which records what it was asked
    metadata_port: int | None = None
    system_info: Mapping[str, str] | None = None
    services: Mapping[int, int] | None = None  # more host services, guest port -> host port
    archive_sha256: str = ""  # of the archive the declaration names by URL
    fleet: Lab | None = None  # the fleet server the host is enrolled with, serving EXAMPLE_GROUP


class BootedHost:
    """A running VM plus what its first boot announced."""

    def __init__(self, vm: VM, ready: Ready, artifact: Path, credentials: dict[str, str | bytes],
                 provisioning: Provisioning, milestones: Milestones) -> None:
        self.vm = vm
        self.ready = ready
        self.artifact = artifact
        self.credentials = credentials
        self.provisioning = provisioning
        self.declared_key = provisioning.declared_key
        self.milestones = milestones  # provisioned / container answering, from QEMU start


def _boot(request: pytest.FixtureRequest, artifact: Path, state: Path, service: HostService,
          how: Provisioning, secure_boot: bool = False, tpm: bool = False) -> Iterator[BootedHost]:
    enrolment = (how.fleet.enrolment(EXAMPLE_GROUP, guest_port=FLEET_GUEST_PORT) if how.fleet is not None
                 else Enrolment({}, {}))
    credentials: dict[str, str | bytes] = {**dict([PROBE_CREDENTIAL]), **enrolment.credentials}
    answer_port = free_port()  # the declared container's port, watched from the host
    with VM(
        artifact,
        state,
        host_services={HOST_SERVICE_GUEST_PORT: service.host_port, **(how.services or {}),
                       **enrolment.host_services},
        credentials=credentials,
        seed=how.seed,
        forwards=(Forward(answer_port, EXAMPLE_PORT),),
        metadata_service=how.metadata_port,
        system_info=how.system_info,
        secure_boot=secure_boot,
        tpm=tpm,
    ) as vm:
        started = time.monotonic()
        vm.start()
        milestones = Milestones(vm.state.serial_log, started, answer_port, EXAMPLE_PAGE).watch()
        uptime: dict[str, float] = {}  # the kernel's, at BERTH-READY: ready_s less it is firmware + loader
        try:
            ready = vm.wait_ready()
            uptime["ready_uptime_s"] = ready.uptime_s
            vm.wait_ssh()
            yield BootedHost(vm, ready, artifact, credentials, how, milestones)
        finally:
            milestones.stop()
            figures = {"accel": vm.accel.value, "secure_boot": secure_boot, "tpm": tpm, **milestones.figures(),
                       **uptime}
            request.config.stash.setdefault(FIGURES, {})[how.source] = figures
            path = state.parent / "provision-figures.json"  # in the run's basetemp
            path.write_text(json.dumps(request.config.stash[FIGURES], indent=1, sort_keys=True) + "\n")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    figures = config.stash.get(FIGURES, {})
    if figures:
        terminalreporter.section("provisioning: seconds from QEMU start (host clock, qemu/milestones.py)")
        for source, values in sorted(figures.items()):
            terminalreporter.write_line(f"{source}: {json.dumps(values, sort_keys=True)}")


@pytest.fixture(scope="session")
def booted_host(
    request: pytest.FixtureRequest, default_image: Path, host_service: HostService,
    busybox_archive: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[BootedHost]:
    """The default (docker) image, booted once and ready, reachable over SSH; it boots
    with a NoCloud seed too (one boot proves provisioning as well)."""
    scratch = tmp_path_factory.mktemp("seed")
    declared_key = scratch / "declared_ed25519"
    public_key = ensure_key(declared_key).decode().strip()
    archive, tag = busybox_archive
    seed = write_seed(scratch / "seed.iso", example_user_data(public_key, tag).encode(),
                      extra={EXAMPLE_ARCHIVE: archive.read_bytes()})
    yield from _boot(request, default_image, tmp_path_factory.mktemp("vm-docker"), host_service,
                     Provisioning("nocloud", declared_key, EXAMPLE_HOSTNAME, seed=seed))


@pytest.fixture(scope="session")
def podman_fleet(podman_image: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A real `berth serve` (HTTPS, SQLite) whose TUF repository holds the podman image's
    1.0.0, rolling out to the group the podman host's declaration names."""
    with Lab(tmp_path_factory.mktemp("podman-fleet"), logging.getLogger("berth.qemu").info) as lab:
        lab.publish(podman_image)
        with lab.serve({EXAMPLE_GROUP: lab_group()}):
            yield lab


@pytest.fixture(scope="session")
def booted_podman_host(
    request: pytest.FixtureRequest, podman_image: Path, host_service: HostService,
    busybox_archive: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory, podman_fleet: Lab,
) -> Iterator[BootedHost]:
    """The podman variant, booted once and ready, as an EC2 instance: SMBIOS says
    Amazon EC2, and the fake IMDSv2 at 169.254.169.254 gives it the example
    declaration (its archive by URL from a host service, pinned by sha256). Its image
    is signed and it boots OVMF's Secure Boot build in setup mode: systemd-boot enrols
    the image's keys, resets, and the host comes up enforcing (tests/qemu/test_secure_boot.py).
    It has a TPM 2.0 (swtpm): the UKI's measurements and its signed PCR 11 policy are checked
    against it (tests/qemu/test_measured_boot.py). Its agent is enrolled with ``podman_fleet``
    (tests/qemu/test_secure_boot_rotation.py updates it through that server)."""
    scratch = tmp_path_factory.mktemp("imds")
    declared_key = scratch / "declared_ed25519"
    public_key = ensure_key(declared_key).decode().strip()
    archive, tag = busybox_archive
    data = archive.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    url = f"http://{HOST_SERVICES_ADDRESS}:{ARCHIVE_GUEST_PORT}/{EXAMPLE_ARCHIVE}#sha256={digest}"
    cloud = Cloud(example_user_data(public_key, tag, archive=url, hostname=IMDS_HOSTNAME).encode(),
                  instance_id=IMDS_INSTANCE_ID)
    with serve("ec2", cloud) as base, serve_files({f"/{EXAMPLE_ARCHIVE}": data}) as archive_port:
        yield from _boot(request, podman_image, tmp_path_factory.mktemp("vm-podman"), host_service, Provisioning(
            "ec2", declared_key, IMDS_HOSTNAME, cloud=cloud, metadata_port=urlsplit(base).port, system_info=EC2_SYSTEM,
            services={ARCHIVE_GUEST_PORT: archive_port}, archive_sha256=digest, fleet=podman_fleet),
            secure_boot=True, tpm=True)
