"""Which certificates a host trusts for the UKIs it stages (updater/agent/sbdb.py,
sbcheck.py), the firmware's db read as efivarfs gives it, and the db append
(`berth agent secure-boot-db`, sbappend.py) on a stand-in efivarfs directory
(the firmware's side of it, the KEK's signature check, runs in QEMU:
tests/qemu/test_secure_boot_rotation.py)."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from builder import sbkeys, sbrotate, sbsign
from updater.agent import efivars, sbappend, sbcheck, sbdb

REPO = Path(__file__).resolve().parents[2]
BOOT_LOADER = Path("/usr/lib/systemd/boot/efi/systemd-bootx64.efi")
SHA256_GUID = uuid.UUID("c1c41626-504c-4092-aca9-41f936934328")


def der(cert: Path) -> bytes:
    return x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def rotating(tmp_path_factory: pytest.TempPathFactory) -> sbkeys.SecureBootKeys:
    """A key set in the middle of a rotation: db (old) and db-next with its append file."""
    keys = tmp_path_factory.mktemp("rot") / "keys"
    sbkeys.make(keys)
    sbrotate.begin(keys)
    return sbkeys.keys_in(keys)


def esl(keys: sbkeys.SecureBootKeys, name: str) -> bytes:
    """The signature list systemd-boot enrolled for ``name`` (the payload of its .auth)."""
    return sbdb.auth_payload(keys.auth(name).read_bytes())


def append_payload(keys: sbkeys.SecureBootKeys) -> bytes:
    return sbdb.auth_payload((keys.directory / sbrotate.APPEND_AUTH).read_bytes())


def hash_list(*digests: bytes) -> bytes:
    """An EFI_CERT_SHA256 signature list (what dbx mostly holds: image hashes)."""
    each = 16 + 32
    return struct.pack("<16sIII", SHA256_GUID.bytes_le, 28 + each * len(digests), 0, each) + b"".join(
        uuid.uuid4().bytes_le + d for d in digests)


def efivarfs_file(attributes: int, data: bytes) -> bytes:
    return struct.pack("<I", attributes) + data


# ---- signature lists ------------------------------------------------------------------


def test_signature_lists_of_a_db_with_two_lists_give_both_certificates(rotating: sbkeys.SecureBootKeys) -> None:
    db = esl(rotating, "db") + append_payload(rotating) + hash_list(b"\1" * 32)
    found = sbdb.signature_lists(db)
    assert [s.kind for s in found] == [sbdb.CERT_X509, sbdb.CERT_X509, SHA256_GUID]
    owner = uuid.UUID((rotating.directory / sbkeys.OWNER_FILE).read_text().strip())
    assert found[0].owner == owner and found[2].data == b"\1" * 32
    assert sbdb.certificates(db) == [der(rotating.cert("db")), der(rotating.cert(sbrotate.NEXT))]
    assert sbdb.certificates(None) == []


@pytest.mark.parametrize("cut", [1, 27, 29, 100])
def test_a_cut_or_bent_signature_list_is_refused_not_misread(rotating: sbkeys.SecureBootKeys, cut: int) -> None:
    data = esl(rotating, "db")
    with pytest.raises(sbdb.BadVariable):
        sbdb.signature_lists(data[:cut])
    bent = bytearray(data)
    struct.pack_into("<I", bent, 16, len(data) + 1)  # ListSize past the end
    with pytest.raises(sbdb.BadVariable):
        sbdb.signature_lists(bytes(bent))


def test_variable_data_splits_efivarfs_attributes_from_the_data() -> None:
    assert sbdb.variable_data(b"\x27\0\0\0abc") == (0x27, b"abc")
    with pytest.raises(sbdb.BadVariable):
        sbdb.variable_data(b"\x27")


def test_auth_payload_refuses_what_is_not_an_authentication_2(rotating: sbkeys.SecureBootKeys) -> None:
    auth = (rotating.directory / sbrotate.APPEND_AUTH).read_bytes()
    assert sbdb.certificates(sbdb.auth_payload(auth)) == [der(rotating.cert(sbrotate.NEXT))]
    for bad in (auth[:30], auth[:16] + b"\xff\xff\xff\x7f" + auth[20:], auth[:22] + b"\0\0" + auth[24:]):
        with pytest.raises(sbdb.BadVariable):
            sbdb.auth_payload(bad)


# ---- which certificates a host trusts -------------------------------------------------


def test_trust_is_the_images_certificates_that_db_holds_and_dbx_does_not(rotating: sbkeys.SecureBootKeys) -> None:
    old, new = der(rotating.cert("db")), der(rotating.cert(sbrotate.NEXT))
    stranger = der(rotating.cert("KEK"))  # a certificate db holds that the image does not trust
    image = [old, new]
    # Before the append: the new one waits.
    before = sbdb.trust(image, esl(rotating, "db"), None)
    assert (before.trusted, before.waiting, before.revoked) == ((old,), (new,), ())
    # After it: both.
    after = sbdb.trust(image, esl(rotating, "db") + append_payload(rotating), hash_list(b"\2" * 32))
    assert (after.trusted, after.waiting) == ((old, new), ())
    # db holding another certificate adds nothing to what the image trusts.
    assert sbdb.trust([old], esl(rotating, "KEK") + esl(rotating, "db"), None).trusted == (old,)
    assert stranger not in sbdb.trust(image, esl(rotating, "KEK"), None).trusted
    # The old certificate removed from db (the rotation's last step), or revoked by dbx.
    assert sbdb.trust(image, append_payload(rotating), None).trusted == (new,)
    revoked = sbdb.trust(image, esl(rotating, "db") + append_payload(rotating), esl(rotating, "db"))
    assert (revoked.trusted, revoked.revoked) == ((new,), (old,))
    # No db at all (no keys enrolled, no UEFI): nothing enforces at boot, the image's set stands.
    assert sbdb.trust(image, None, None).trusted == (old, new)


def test_missing_names_the_append_payloads_db_lacks(rotating: sbkeys.SecureBootKeys) -> None:
    payload = append_payload(rotating)
    assert sbdb.missing([payload], esl(rotating, "db")) == [0]
    assert sbdb.missing([payload], esl(rotating, "db") + payload) == []
    assert sbdb.missing([esl(rotating, "db"), payload], esl(rotating, "db")) == [1]
    assert sbdb.missing([payload], None) == []


# ---- the UKI's signer in the firmware's db ---------------------------------------------


@pytest.fixture(scope="module")
def signed_pes(rotating: sbkeys.SecureBootKeys, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The systemd-boot PE signed by the old db key, by the incoming one, and by a stranger."""
    out = tmp_path_factory.mktemp("pes")
    stranger = sbkeys.make(out / "stranger")
    incoming = sbkeys.SecureBootKeys(out / "incoming")
    incoming.directory.mkdir()
    shutil.copyfile(rotating.key(sbrotate.NEXT), incoming.key("db"))
    shutil.copyfile(rotating.cert(sbrotate.NEXT), incoming.cert("db"))
    made = {}
    for name, keys in (("old", rotating), ("new", incoming), ("stranger", stranger)):
        sbsign.sign_pe(BOOT_LOADER, out / f"{name}.efi", keys, 1764621840)
        made[name] = (out / f"{name}.efi").read_bytes()
    return made


def image_dir(tmp_path: Path, keys: sbkeys.SecureBootKeys, *names: str) -> Path:
    directory = tmp_path / "usr/lib/berth/secure-boot"
    directory.mkdir(parents=True)
    for name in names:
        shutil.copyfile(keys.cert(name), directory / f"{name}.crt")
    return directory


def firmware(tmp_path: Path, db: bytes | None, dbx: bytes | None = None) -> Path:
    efi = tmp_path / "efivars"
    efi.mkdir(parents=True)
    for name, data in (("db", db), ("dbx", dbx)):
        if data is not None:
            efivars.path(efi, name, sbdb.IMAGE_SECURITY_DATABASE).write_bytes(efivarfs_file(0x27, data))
    return efi


def test_a_uki_signed_by_the_incoming_key_waits_until_db_holds_it(
    rotating: sbkeys.SecureBootKeys, signed_pes: dict[str, bytes], tmp_path: Path
) -> None:
    directory = image_dir(tmp_path, rotating, "db", sbrotate.NEXT)
    before = sbcheck.firmware_trust(directory, firmware(tmp_path / "before", esl(rotating, "db")))
    assert sbcheck.check(signed_pes["old"], before) is None
    waiting = sbcheck.check(signed_pes["new"], before)
    assert waiting is not None and not waiting.final and "does not hold yet" in waiting.why
    refused = sbcheck.check(signed_pes["stranger"], before)
    assert refused is not None and refused.final and "this host's db certificate" in refused.why
    after = sbcheck.firmware_trust(directory, firmware(tmp_path / "after", esl(rotating, "db") + append_payload(rotating)))
    assert sbcheck.check(signed_pes["new"], after) is None and sbcheck.check(signed_pes["old"], after) is None
    assert sbcheck.check(signed_pes["stranger"], after).final  # type: ignore[union-attr]


def test_an_image_that_does_not_trust_the_incoming_key_refuses_it_for_good(
    rotating: sbkeys.SecureBootKeys, signed_pes: dict[str, bytes], tmp_path: Path
) -> None:
    """A host still on a release from before the transition: db may hold the new key
    already (another host's doing cannot reach it, but an operator's could), its image
    does not trust it."""
    directory = image_dir(tmp_path, rotating, "db")
    trust = sbcheck.firmware_trust(directory, firmware(tmp_path, esl(rotating, "db") + append_payload(rotating)))
    refusal = sbcheck.check(signed_pes["new"], trust)
    assert refusal is not None and refusal.final


def test_revoked_by_dbx_is_final_and_so_is_a_stranger_when_db_holds_none_of_the_image(
    rotating: sbkeys.SecureBootKeys, signed_pes: dict[str, bytes], tmp_path: Path
) -> None:
    directory = image_dir(tmp_path, rotating, "db", sbrotate.NEXT)
    both = esl(rotating, "db") + append_payload(rotating)
    revoked = sbcheck.check(signed_pes["old"], sbcheck.firmware_trust(
        directory, firmware(tmp_path / "x", both, esl(rotating, "db"))))
    assert revoked is not None and revoked.final and "dbx revokes" in revoked.why
    # db holding none of the image's certificates: one it trusts waits (an append may come),
    # a stranger's is refused for good.
    neither = sbcheck.firmware_trust(directory, firmware(tmp_path / "y", esl(rotating, "KEK")))
    assert not sbcheck.check(signed_pes["old"], neither).final  # type: ignore[union-attr]
    none = sbcheck.check(signed_pes["stranger"], neither)
    assert none is not None and none.final and "holds none of this image's" in none.why


def test_status_lists_trusted_and_waiting_certificates(rotating: sbkeys.SecureBootKeys, tmp_path: Path) -> None:
    directory = image_dir(tmp_path, rotating, "db", sbrotate.NEXT)
    shown = sbcheck.status(directory, firmware(tmp_path, esl(rotating, "db")))
    assert shown is not None
    assert [c["sha256"] for c in shown["trusted"]] == [sbdb.fingerprint(der(rotating.cert("db")))]
    assert [c["subject"] for c in shown["waiting"]] == [
        x509.load_pem_x509_certificate(rotating.cert(sbrotate.NEXT).read_bytes()).subject.rfc4514_string()]
    assert sbcheck.status(tmp_path / "nothing", tmp_path) is None


# ---- the append, on a stand-in efivarfs -----------------------------------------------


def test_secure_boot_db_appends_what_db_lacks_once(
    rotating: sbkeys.SecureBootKeys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the firmware does on an APPEND_WRITE (it checks the KEK's signature, then adds
    the lists) stood in for by appending the payload: the applier writes the whole .auth
    with the append attributes, reads db back, and a second run writes nothing."""
    source = tmp_path / "sb"
    source.mkdir()
    shutil.copyfile(rotating.directory / sbrotate.APPEND_AUTH, source / sbrotate.APPEND_AUTH)
    efi = firmware(tmp_path, esl(rotating, "db"))
    writes: list[tuple[str, int, bytes]] = []

    def firmware_append(directory: Path, name: str, guid: str, attributes: int, data: bytes) -> None:
        writes.append((name, attributes, data))
        target = efivars.path(directory, name, guid)
        target.write_bytes(target.read_bytes() + sbdb.auth_payload(data))

    monkeypatch.setattr(efivars, "write", firmware_append)
    first = sbappend.apply(source, efi)
    assert not first.failed and len(first.lines) == 1 and first.lines[0].startswith("appended CN=berth Secure Boot db ")
    assert writes == [("db", 0x67, (source / sbrotate.APPEND_AUTH).read_bytes())]
    db = sbdb.variable_data(efivars.read(efi, "db", sbdb.IMAGE_SECURITY_DATABASE) or b"")[1]
    assert sbdb.certificates(db) == [der(rotating.cert("db")), der(rotating.cert(sbrotate.NEXT))]
    again = sbappend.apply(source, efi)
    assert not again.failed and "already" in again.lines[0] and len(writes) == 1


def test_secure_boot_db_reports_a_refusal_and_a_write_that_did_not_stick(
    rotating: sbkeys.SecureBootKeys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "sb"
    source.mkdir()
    shutil.copyfile(rotating.directory / sbrotate.APPEND_AUTH, source / sbrotate.APPEND_AUTH)
    efi = firmware(tmp_path, esl(rotating, "db"))

    def refuse(*_: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(efivars, "write", refuse)
    refused = sbappend.apply(source, efi)
    assert refused.failed and "the firmware refused db-next.append.auth" in refused.lines[0]
    monkeypatch.setattr(efivars, "write", lambda *_: None)
    lost = sbappend.apply(source, efi)
    assert lost.failed and "does not hold" in lost.lines[0]


def test_secure_boot_db_verb_with_nothing_to_do_exits_0(tmp_path: Path) -> None:
    (tmp_path / "usr/lib/berth/secure-boot").mkdir(parents=True)
    done = subprocess.run([sys.executable, "-m", "cli.main", "agent", "--host-root", str(tmp_path), "secure-boot-db"],
                          cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "no db updates to apply" in done.stdout, done


def test_efivars_write_puts_attributes_first_and_keeps_other_bytes(tmp_path: Path) -> None:
    """On a plain directory (no immutable flag to clear): one write of attributes + data."""
    efivars.write(tmp_path, "db", sbdb.IMAGE_SECURITY_DATABASE, 0x67, b"payload")
    assert efivars.read(tmp_path, "db", sbdb.IMAGE_SECURITY_DATABASE) == b"\x67\0\0\0payload"
    assert efivars.read(tmp_path, "dbx", sbdb.IMAGE_SECURITY_DATABASE) is None


def test_the_unit_appends_only_on_a_transition_image_after_the_boot_is_blessed() -> None:
    import configparser
    import fnmatch

    from updater import contract

    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(REPO / "updater/agent/image/usr/lib/systemd/system/berth-secure-boot-db.service")
    after = unit["Unit"]["After"].split()
    assert "boot-complete.target" in after and "systemd-bless-boot.service" in after
    assert unit["Unit"]["Requires"] == "boot-complete.target"
    # The glob names what a transition build puts in the image, and nothing a plain build does.
    glob = unit["Unit"]["ConditionPathExistsGlob"]
    directory = "/" + str(Path(contract.SECURE_BOOT_DB_CERT).parent)
    assert [n for n in sbrotate.IMAGE_FILES if fnmatch.fnmatch(f"{directory}/{n}", glob)] == [sbrotate.APPEND_AUTH]
    assert unit["Service"]["ExecStart"] == "/usr/bin/berth agent secure-boot-db"
