"""The UKIs' signed PCR 11 policy (builder/measure.py, builder/uki.py's add_sections) and the
PCR signing key (builder/pcrkey.py, `berth keys init`): berth's own reckoning of PCR 11
against the host's systemd-measure, on a UKI the host's ukify builds."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from builder import measure, pcrkey, sbkeys, sbsign, uki
from builder.build import pcr_signing_key
from builder.settings import parse
from cli.errors import UserError
from updater.pe import PEError

REPO = Path(__file__).resolve().parents[2]
STUB = Path("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")
MEASURE = "/usr/lib/systemd/systemd-measure"
EPOCH = 1764621840


def berth(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=REPO, capture_output=True, text=True,
                          check=False)


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    keys = tmp_path_factory.mktemp("k") / "keys"
    result = berth("keys", "init", "--keys", str(keys))
    assert result.returncode == 0, result.stderr
    assert "PCR signing key in" in result.stdout
    return keys


@pytest.fixture(scope="module")
def unsigned_uki(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A UKI as mkosi has ukify make one (a stand-in kernel; the stub is real)."""
    work = tmp_path_factory.mktemp("uki")
    (work / "linux").write_bytes(hashlib.sha256(b"kernel").digest() * 4096)
    (work / "initrd").write_bytes(b"an initrd" * 1000)
    (work / "cmdline").write_bytes(b"console=ttyS0 ro roothash=" + b"ab" * 32 + b"\0")
    (work / "os-release").write_text("ID=debian\nVERSION_ID=13\n")
    subprocess.run(["/usr/bin/python3", "/usr/lib/systemd/ukify", "build", "--linux", str(work / "linux"),
                    "--initrd", str(work / "initrd"), "--cmdline", f"@{work / 'cmdline'}",
                    "--os-release", f"@{work / 'os-release'}", "--uname", "6.12.57+deb13-cloud-amd64",
                    "--stub", str(STUB), "--output", str(work / "uki.efi")], check=True, capture_output=True)
    return (work / "uki.efi").read_bytes()


def calculate(files: dict[str, Path], phase: str) -> str:
    done = subprocess.run([MEASURE, "calculate", *measure.measure_arguments(files, [phase]), "--json=short"],
                          check=True, capture_output=True, text=True)
    (entry,) = json.loads(done.stdout)["sha256"]
    return str(entry["hash"])


def test_keys_init_makes_an_rsa_2048_pcr_key_beside_the_secure_boot_keys(keys_dir: Path) -> None:
    key = pcrkey.key_in(keys_dir)
    assert key.directory.parent == sbkeys.keys_in(keys_dir).directory.parent
    assert key.private.stat().st_mode & 0o077 == 0
    private = serialization.load_pem_private_key(key.private.read_bytes(), None)
    assert isinstance(private, rsa.RSAPrivateKey) and private.key_size == 2048
    public = private.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    assert key.public.read_bytes() == public


def test_a_pcr_key_is_imported_or_added_to_an_older_key_directory(tmp_path: Path, keys_dir: Path) -> None:
    older = tmp_path / "older"
    assert berth("keys", "init", "--keys", str(older)).returncode == 0
    (older / pcrkey.SUBDIR / pcrkey.PRIVATE).unlink()
    with pytest.raises(UserError, match="--measured-boot-only"):
        pcrkey.key_in(older)
    (older / pcrkey.SUBDIR / pcrkey.PUBLIC).unlink()
    (older / pcrkey.SUBDIR).rmdir()
    added = berth("keys", "init", "--keys", str(older), "--measured-boot-only")
    assert added.returncode == 0 and "TUF" not in added.stdout and "Secure Boot" not in added.stdout, added
    assert pcrkey.key_in(older).public.is_file()
    imported = berth("keys", "init", "--keys", str(tmp_path / "imported"),
                     "--pcr-key-from", str(pcrkey.key_in(keys_dir).private))
    assert imported.returncode == 0, imported.stderr
    assert pcrkey.key_in(tmp_path / "imported").public.read_bytes() == pcrkey.key_in(keys_dir).public.read_bytes()
    curve = tmp_path / "ec.pem"
    curve.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    refused = berth("keys", "init", "--keys", str(tmp_path / "ec"), "--pcr-key-from", str(curve))
    assert refused.returncode != 0 and "must be RSA 2048" in refused.stderr


def test_a_tpm2_build_without_the_pcr_key_says_so_in_one_line(tmp_path: Path, keys_dir: Path) -> None:
    with pytest.raises(UserError, match=r"var_encryption tpm2 .* \(--secure-boot-keys DIR") as error:
        pcr_signing_key(parse({"var_encryption": "tpm2"}, "x.yaml"))
    assert "\n" not in str(error.value)
    bare = tmp_path / "bare"
    bare.mkdir()
    with pytest.raises(UserError, match=r"no PCR signing key in .*measured-boot \(the directory missing\)"):
        pcr_signing_key(parse({"var_encryption": "tpm2", "secure_boot_keys": str(bare)}, "x.yaml"))
    # Without tpm2 a key directory without a PCR key signs no policy; with one, it does.
    assert pcr_signing_key(parse({"secure_boot_keys": str(bare)}, "x.yaml")) is None
    assert pcr_signing_key(parse({}, "x.yaml")) is None
    assert pcr_signing_key(parse({"secure_boot_keys": str(keys_dir)}, "x.yaml")) == pcrkey.key_in(keys_dir)
    with pytest.raises(UserError, match="key 'var_encryption' must be one of none, tpm2"):
        parse({"var_encryption": "luks"}, "x.yaml")


def test_berth_s_pcr_11_is_systemd_measure_s_for_each_phase(unsigned_uki: bytes, tmp_path: Path,
                                                           keys_dir: Path) -> None:
    sections = {**uki.sections(unsigned_uki), ".pcrpkey": pcrkey.key_in(keys_dir).public.read_bytes()}
    assert [name for name, _ in measure.measured(sections)] == [
        ".linux", ".osrel", ".cmdline", ".initrd", ".uname", ".sbat", ".pcrpkey"]
    files = {}
    for name, content in measure.measured(sections):
        files[name] = tmp_path / name
        files[name].write_bytes(content)
    for phase in ("", "enter-initrd", "enter-initrd:leave-initrd", "enter-initrd:leave-initrd:sysinit:ready"):
        assert measure.pcr11(sections, phase).hex() == calculate(files, phase), phase
    # Each measured section counts: a changed command line is another PCR 11.
    changed = {**sections, ".cmdline": sections[".cmdline"].replace(b"ro", b"rw")}
    assert measure.pcr11(changed) != measure.pcr11(sections)


def test_a_section_systemd_measure_cannot_measure_is_refused() -> None:
    with pytest.raises(UserError, match=r"section\(s\) \.ucode"):
        measure.measured({".linux": b"k", ".ucode": b"u"})


def test_the_signed_policy_goes_into_the_uki_which_then_signs_and_verifies(unsigned_uki: bytes, tmp_path: Path,
                                                                          keys_dir: Path) -> None:
    key = pcrkey.key_in(keys_dir)
    measured = measure.sign_uki(unsigned_uki, key, tmp_path)
    before, after = uki.sections(unsigned_uki), uki.sections(measured)
    assert {n: after[n] for n in before} == before  # nothing the stub measured moved
    assert after[".pcrpkey"] == key.public.read_bytes()
    signature = json.loads(after[".pcrsig"])
    public = serialization.load_pem_public_key(key.public.read_bytes())
    assert isinstance(public, rsa.RSAPublicKey)
    fingerprint = hashlib.sha256(public.public_bytes(serialization.Encoding.DER,
                                                     serialization.PublicFormat.PKCS1)).hexdigest()
    entries = signature["sha256"]
    assert len(entries) == len(measure.PHASES)
    for entry in entries:
        assert entry["pcrs"] == [11] and entry["pkfp"] == fingerprint
        # The PCR key signed each policy digest (what the TPM's PolicyAuthorize checks).
        public.verify(base64.b64decode(entry["sig"]), bytes.fromhex(entry["pol"]), padding.PKCS1v15(),
                      hashes.SHA256())
    assert measure.sign_uki(unsigned_uki, key, tmp_path) == measured  # the same bytes each build
    # Authenticode still covers the whole image, added sections included.
    (tmp_path / "m.efi").write_bytes(measured)
    sb = sbkeys.keys_in(keys_dir)
    sbsign.sign_pe(tmp_path / "m.efi", tmp_path / "s.efi", sb, EPOCH)
    assert subprocess.run(["sbverify", "--cert", str(sb.cert("db")), str(tmp_path / "s.efi")],
                          capture_output=True, check=False).returncode == 0
    with pytest.raises(PEError, match="signed"):
        uki.add_sections((tmp_path / "s.efi").read_bytes(), [(".x", b"1")])
    with pytest.raises(PEError, match="exists already"):
        uki.add_sections(measured, [(".pcrsig", b"{}")])


def test_added_sections_are_where_ukify_puts_them(unsigned_uki: bytes, tmp_path: Path) -> None:
    """The host's ukify adds the same two sections at the same places (its .sbat aside,
    which it rewrites whenever it runs)."""
    (tmp_path / "uki.efi").write_bytes(unsigned_uki)
    (tmp_path / "key.pem").write_bytes(b"-----BEGIN PUBLIC KEY-----\n")
    (tmp_path / "sig.json").write_bytes(b"{}\n")
    subprocess.run(["/usr/bin/python3", "/usr/lib/systemd/ukify", "build", "--stub", str(tmp_path / "uki.efi"),
                    "--pcrpkey", str(tmp_path / "key.pem"), "--section", f".pcrsig:@{tmp_path / 'sig.json'}",
                    "--output", str(tmp_path / "ukify.efi")], check=True, capture_output=True)
    ours = uki.add_sections(unsigned_uki, [(".pcrpkey", (tmp_path / "key.pem").read_bytes()),
                                           (".pcrsig", b"{}\n")])
    from updater.pe import headers

    theirs = headers((tmp_path / "ukify.efi").read_bytes()).sections
    assert [s for s in headers(ours).sections if s.name != ".sbat"] == [s for s in theirs if s.name != ".sbat"]
