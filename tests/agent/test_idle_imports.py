"""What the agent service holds when its loop begins is what every host keeps resident
while idle (each update step runs in a forked child, whose imports go when it ends).
Measured on the service itself: `service.run` on a host on files with a fleet server
set, stopped at its first step. Each cut of issue 12 is one case below, with the
figure it saved in the guest (README, "Boot figures")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.agent.conftest import Host

REPO = Path(__file__).resolve().parents[2]
PROBE = """
import sys
from pathlib import Path
from updater.agent import service

def first_step(agent):
    print("\\n".join(sorted(sys.modules)))
    raise SystemExit(0)

service.step_apart = first_step
service.run(service.make_agent(Path(sys.argv[1])), once=False)
"""

# Modules the idle service must not hold, by what keeps them out.
NOT_IDLE = {
    # The update's code: delta assembly, the Authenticode check, TUF and its HTTP.
    "update steps": ("updater.agent.delta", "updater.agent.deltaplan", "updater.agent.authenticode",
                     "tuf", "cryptography", "requests", "urllib3"),
    # `berth agent status` alone reads the provisioning record; READY=1 needs health().
    "provisioning": ("updater.provision.apply", "updater.provision.schema", "urllib.request"),
    # The settings are read in a child (service.read_settings_apart).
    "settings parser": ("yaml",),
    # Only a step writing a slot decompresses (writer.write_artifact).
    "decompressor": ("zstandard",),
    # The fleet client (TLS, http.client) and hashing load in each step's child: OpenSSL's
    # libcrypto alone is ~5 MiB of the service's resident set.
    "fleet client and OpenSSL": ("updater.client", "updater.transport", "http.client", "ssl", "_ssl",
                                 "hashlib", "_hashlib"),
}


def idle_modules(host: Host) -> set[str]:
    host.settings(server_url="https://fleet.invalid:8443")  # ServerFleet: run()'s fleet branch
    return set(subprocess.run([sys.executable, "-c", PROBE, str(host.root)], cwd=REPO, check=True,
                              capture_output=True, text=True).stdout.split())


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory, base_disk: Path, releases: dict) -> set[str]:
    from tests.agent.conftest import make_host

    base = tmp_path_factory.mktemp("idle")
    trusted = base / "root.json"
    trusted.write_text("{}")  # never read: no step runs
    modules = idle_modules(make_host(base, base_disk, releases, "https://fleet.invalid:8443/repo", trusted))
    assert {"updater.agent.agent", "updater.agent.service"} <= modules  # the probe did run the service
    return modules


@pytest.mark.parametrize("cut", sorted(NOT_IDLE))
def test_the_idle_service_does_not_hold(cut: str, loaded: set[str]) -> None:
    assert sorted(loaded & set(NOT_IDLE[cut])) == []
