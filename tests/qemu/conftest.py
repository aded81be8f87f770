"""Booted VMs for the image tests: one per engine, shared by every test that reads it.

Built images come from the session fixtures in tests/conftest.py (the builder's);
booting is what is done here, once per session for each variant.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from qemu.container_image import write_busybox_archive
from qemu.harness import VM
from qemu.machine import HOST_SERVICES_ADDRESS
from qemu.ready import Ready
from qemu.seed import EXAMPLE_ARCHIVE, example_user_data, write_seed
from qemu.ssh import ensure_key

# The guest reaches the host's test service at 10.0.2.100:HOST_SERVICE_GUEST_PORT.
HOST_SERVICE_GUEST_PORT = 8080
HOST_SERVICE_BODY = b"berth host service\n"
# Not berth.*: the agent imports those and refuses names it does not know.
PROBE_CREDENTIAL = ("probe.token", "provisioned-through-smbios")


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


class BootedHost:
    """A running VM plus what its first boot announced."""

    def __init__(self, vm: VM, ready: Ready, artifact: Path, credentials: dict[str, str],
                 declared_key: Path | None = None) -> None:
        self.vm = vm
        self.ready = ready
        self.artifact = artifact
        self.credentials = credentials
        self.declared_key = declared_key  # the private half of the key the seed declares


def _boot(artifact: Path, state: Path, service: HostService, seed: Path | None = None,
          declared_key: Path | None = None) -> Iterator[BootedHost]:
    credentials = dict([PROBE_CREDENTIAL])
    with VM(
        artifact,
        state,
        host_services={HOST_SERVICE_GUEST_PORT: service.host_port},
        credentials=credentials,
        seed=seed,
    ).start() as vm:
        ready = vm.wait_ready()
        vm.wait_ssh()
        yield BootedHost(vm, ready, artifact, credentials, declared_key)


@pytest.fixture(scope="session")
def booted_host(
    default_image: Path, host_service: HostService, busybox_archive: tuple[Path, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[BootedHost]:
    """The default (docker) image, booted once and ready, reachable over SSH; it boots
    with a NoCloud seed too (one boot proves provisioning as well)."""
    scratch = tmp_path_factory.mktemp("seed")
    declared_key = scratch / "declared_ed25519"
    public_key = ensure_key(declared_key).decode().strip()
    archive, tag = busybox_archive
    seed = write_seed(scratch / "seed.iso", example_user_data(public_key, tag).encode(),
                      extra={EXAMPLE_ARCHIVE: archive.read_bytes()})
    yield from _boot(default_image, tmp_path_factory.mktemp("vm-docker"), host_service, seed, declared_key)


@pytest.fixture(scope="session")
def booted_podman_host(
    podman_image: Path, host_service: HostService, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BootedHost]:
    """The podman variant, booted once and ready."""
    yield from _boot(podman_image, tmp_path_factory.mktemp("vm-podman"), host_service)
