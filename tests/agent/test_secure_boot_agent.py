"""The agent's second lock on a host on files: a host whose image carries a Secure Boot
db certificate stages only UKIs it signed, TUF signature or not, and touches nothing
before it refuses."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from builder import sbkeys
from tests.agent.conftest import BuiltRelease, build_release, make_host, publish
from tests.resign import with_artifact
from updater import contract

Host = Server = Any  # fixtures from conftest.py
BOOT_LOADER = Path("/usr/lib/systemd/boot/efi/systemd-bootx64.efi")


@pytest.fixture(scope="module")
def secure_keys(tmp_path_factory: pytest.TempPathFactory) -> sbkeys.SecureBootKeys:
    return sbkeys.make(tmp_path_factory.mktemp("sb") / "keys")


def trust(host: Host, keys: sbkeys.SecureBootKeys) -> None:
    """The host's image carries the db certificate, as a signed `berth build` puts it there."""
    target = host.root / contract.SECURE_BOOT_DB_CERT
    target.parent.mkdir(parents=True)
    shutil.copyfile(keys.cert("db"), target)


def signed_release(out: Path, version: str, keys: sbkeys.SecureBootKeys) -> BuiltRelease:
    """A small release whose UKI is a real PE (systemd-boot carrying the .cmdline the
    host model reads) signed by sbsign with the db key."""
    built = build_release(out, version)
    unsigned = out / f"uki-{version}.efi"
    unsigned.write_bytes(BOOT_LOADER.read_bytes() + f".cmdline\0roothash={built.roothash} console=ttyS0\0".encode())
    uki = built.directory / contract.UKI
    subprocess.run(["sbsign", "--key", str(keys.key("db")), "--cert", str(keys.cert("db")), "--output", str(uki),
                    str(unsigned)], check=True, capture_output=True)
    manifest = with_artifact(built.directory, contract.UKI)
    return dataclasses.replace(built, uki_sha256=manifest.artifacts[contract.UKI].sha256)


def test_a_release_whose_uki_the_db_key_did_not_sign_is_refused_before_the_slot_is_touched(
    host: Host, secure_keys: sbkeys.SecureBootKeys
) -> None:
    trust(host, secure_keys)
    before = host.fingerprint()
    result = host.agent("run", "--once")
    assert "release 1.1 refused: its UKI is not signed by this host's Secure Boot db certificate" in result.stderr
    state = host.state()
    assert state["state"] == "idle" and state["bad_versions"] == ["1.1"]
    assert host.fingerprint() == before and host.rebooted() == 0
    # Bad for good: the next poll does not fetch it again.
    host.agent("run", "--once")
    assert host.fingerprint() == before and host.state()["bad_versions"] == ["1.1"]


def test_a_release_signed_by_the_db_key_stages_and_boots(
    tmp_path: Path, base_disk: Path, releases: Any, server: Server, keys_dir: Path,
    secure_keys: sbkeys.SecureBootKeys,
) -> None:
    signed = signed_release(tmp_path / "built", "1.1", secure_keys)
    repo_dir = server.root / "signed"
    publish(repo_dir, keys_dir, releases["1.0"])
    publish(repo_dir, keys_dir, signed)
    host = make_host(tmp_path, base_disk, {"1.0": releases["1.0"], "1.1": signed}, f"{server.url}/signed",
                     repo_dir / "metadata/root.json")
    trust(host, secure_keys)
    host.agent("run", "--once")
    assert host.state()["state"] == "rebooting"
    assert host.entries() == ["berth_1.1+3.efi", "berth_1.0.efi"]
    assert host.verified_boot() == "1.1"
    assert (host.esp / contract.UKI_DIR / "berth_1.1+3.efi").read_bytes() == (
        signed.directory / contract.UKI).read_bytes()


def test_a_host_without_a_db_certificate_takes_unsigned_ukis_as_before(host: Host) -> None:
    host.agent("run", "--once")
    assert host.state()["state"] == "rebooting" and host.verified_boot() == "1.1"
