"""A db key rotation on a host on files (real TUF over HTTP, real sbsign signatures): on
the transition release the image trusts the old and the incoming db certificate, and a
release the incoming key signed is staged only once the firmware's db (efivarfs, stood
in for by a file under the host's root) holds it; before that it is not taken, not
written and not held against the release."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path
from typing import Any

import pytest

from builder import sbkeys, sbrotate
from tests.agent.conftest import make_host, publish
from tests.agent.test_secure_boot_agent import signed_release
from updater import contract
from updater.agent import efivars, sbdb

Server = Any


@pytest.fixture(scope="module")
def rotating(tmp_path_factory: pytest.TempPathFactory) -> tuple[sbkeys.SecureBootKeys, sbkeys.SecureBootKeys]:
    """(the key set mid-rotation, the incoming db key as a key set of its own to sign with)."""
    base = tmp_path_factory.mktemp("rot")
    sbkeys.make(base / "keys")
    sbrotate.begin(base / "keys")
    keys = sbkeys.keys_in(base / "keys")
    incoming = sbkeys.SecureBootKeys(base / "incoming")
    incoming.directory.mkdir()
    shutil.copyfile(keys.key(sbrotate.NEXT), incoming.key("db"))
    shutil.copyfile(keys.cert(sbrotate.NEXT), incoming.cert("db"))
    return keys, incoming


def test_a_release_signed_by_the_incoming_key_waits_for_the_firmware_db_then_stages(
    tmp_path: Path, base_disk: Path, releases: Any, server: Server, keys_dir: Path,
    rotating: tuple[sbkeys.SecureBootKeys, sbkeys.SecureBootKeys],
) -> None:
    keys, incoming = rotating
    signed = signed_release(tmp_path / "built", "1.1", incoming)
    repo_dir = server.root / "signed"
    publish(repo_dir, keys_dir, releases["1.0"])
    publish(repo_dir, keys_dir, signed)
    host = make_host(tmp_path, base_disk, {"1.0": releases["1.0"], "1.1": signed}, f"{server.url}/signed",
                     repo_dir / "metadata/root.json")
    # The transition image: both certificates (sbkeys.image_tree), the firmware's db the old one only.
    sbkeys.image_tree(keys, host.root)
    efi = host.root / "sys/firmware/efi/efivars"
    efi.mkdir(parents=True)
    db = efivars.path(efi, "db", sbdb.IMAGE_SECURITY_DATABASE)
    db.write_bytes(struct.pack("<I", sbdb.DB_ATTRIBUTES) + sbdb.auth_payload(keys.auth("db").read_bytes()))
    before = host.fingerprint()
    result = host.agent("run", "--once")
    assert "its UKI may not be staged yet: signed by CN=berth Secure Boot db " in result.stderr
    assert "firmware's db does not hold yet" in result.stderr
    assert host.state()["state"] == "idle" and host.state()["bad_versions"] == []
    assert host.fingerprint() == before and host.rebooted() == 0
    status = host.agent("status", "--json").stdout
    assert '"waiting": [' in status and sbdb.fingerprint(sbdb.certificates(sbdb.auth_payload(
        (keys.directory / sbrotate.APPEND_AUTH).read_bytes()))[0]) in status

    # The host appended the certificate (berth-secure-boot-db.service): the next poll stages it.
    db.write_bytes(db.read_bytes() + sbdb.auth_payload((keys.directory / sbrotate.APPEND_AUTH).read_bytes()))
    host.agent("run", "--once")
    assert host.state()["state"] == "rebooting" and host.entries() == ["berth_1.1+3.efi", "berth_1.0.efi"]
    assert (host.esp / contract.UKI_DIR / "berth_1.1+3.efi").read_bytes() == (signed.directory / contract.UKI).read_bytes()
