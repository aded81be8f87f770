"""`berth build`: settings in, a complete artifact directory out — or nothing.

Everything is made in a temporary directory beside the target and renamed
into place only after the lint, the slot check and the manifest succeeded.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from builder import (
    artifacts,
    driver,
    formats,
    layout,
    manifest,
    measure,
    mkosirun,
    packagelock,
    pcrkey,
    provenance,
    sbkeys,
    sbom,
    sbsign,
    seal,
    uki,
)
from builder.lint import lint
from builder.settings import BuildSettings
from cli.cache import cache_dir
from cli.errors import UserError
from updater import contract


class _Progress:
    def __init__(self, show: bool) -> None:
        self.show = show
        self.start = time.monotonic()

    def __call__(self, message: str) -> None:
        if self.show:
            print(f"==> [{time.monotonic() - self.start:5.0f}s] {message}", file=sys.stderr)


def build(settings: BuildSettings, output: Path, *, show: bool = True) -> Path:
    """Build the image and return its artifact directory `output/<id>_<version>/`."""
    progress = _Progress(show)
    # Asked to sign with keys that are not there: say so now, not after mkosi.
    keys = sbkeys.keys_in(Path(settings.secure_boot_keys)) if settings.secure_boot_keys else None
    pcr_key = pcr_signing_key(settings)
    name = settings.artifact_name
    cache = cache_dir()
    log = cache / "logs" / f"build-{name}-{settings.engine}.log"
    output.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=output))
    try:
        out = work / "artifacts"
        out.mkdir()
        source = provenance.source(driver.REPO)
        lock, lock_sha256 = packagelock.read()
        mkosirun.run(settings, work, cache=cache, epoch=source.epoch, log=log, show=show, lock=lock,
                  sb_keys=keys, pcr_key=pcr_key, progress=progress)

        (work / "mkosi" / "image.raw").rename(out / contract.DISK_RAW)
        progress("hashing the root for dm-verity (4 KiB blocks); root hash into GPT and UKI")
        sealed = seal.seal(settings, out / contract.DISK_RAW)
        if pcr_key:
            progress(f"signing each UKI's PCR 11 policy (.pcrsig, .pcrpkey) with {pcr_key.private}")
            esp = layout.built(artifacts.read_table(out / contract.DISK_RAW), settings)[0]
            measure.sign_esp(out / contract.DISK_RAW, esp, pcr_key, source.epoch)
        if keys:
            progress(f"signing boot loader and UKI for Secure Boot with {keys.cert('db')}")
            esp = layout.built(artifacts.read_table(out / contract.DISK_RAW), settings)[0]
            sbsign.sign_esp(out / contract.DISK_RAW, esp, keys, source.epoch)
        if settings.var_encryption == "tpm2":
            progress(f"leaving {settings.var_size_mib} MiB free at the disk's end for /var "
                     "(LUKS2, made and sealed to the TPM at first boot)")
            artifacts.grow(out / contract.DISK_RAW, settings.var_size_mib * layout.MIB)
        progress("extracting root, verity and UKI from the disk image")
        roothash = _extract(settings, out)
        if roothash != sealed:
            raise UserError(f"the UKI names root hash {roothash}, the verity tree is {sealed}")
        with (out / contract.ROOT_IMAGE).open("rb") as f:
            layout.check_slot_fit(layout.erofs_size(f.read(4096)), settings)

        progress(
            "linting the final root (no package manager, compilers, stray setuid, private keys, off-host code)"
        )
        rootfs = work / "rootfs"
        artifacts.extract_root(out / contract.ROOT_IMAGE, rootfs)
        findings = lint(rootfs)
        if findings:
            raise UserError(
                f"lint found {len(findings)} problem(s) in the root: " + "; ".join(findings)
            )

        chosen = formats.parse(settings.formats)
        progress(f"writing the disk as {', '.join(chosen)}")
        disks = [formats.write(fmt, out / contract.DISK_RAW).name for fmt in chosen]

        progress("writing the SBOM (SPDX 2.3) and manifest.json")
        mkosi_manifest = json.loads((work / "mkosi" / "image.manifest").read_text())
        packages = manifest.packages(
            mkosi_manifest, (work / "mkosi" / "package-sizes.tsv").read_text()
        )
        debs = sbom.collect(
            work / "mkosi" / "sbom-input",
            keep=[p.name for p in packages],
            archives=driver.package_archives(cache),
        )
        (out / contract.SBOM).write_text(
            json.dumps(
                sbom.document(
                    image=name,
                    version=settings.version,
                    roothash=roothash,
                    root_sha256=artifacts.sha256(out / contract.ROOT_IMAGE),
                    created=source.epoch,
                    distro=f"debian-{mkosi_manifest.get('config', {}).get('release', 'unknown')}",
                    berth_version=provenance.berth_version(),
                    commit=source.commit,
                    debs=debs,
                ),
                indent=2,
            )
            + "\n"
        )
        slots = layout.slots(settings)
        (out / contract.MANIFEST).write_text(
            contract.Manifest(
                image_id=settings.image_id,
                version=settings.version,
                engine=settings.engine,
                roothash=roothash,
                slot_size=slots.slot_size,
                verity_slot_size=slots.verity_slot_size,
                artifacts={
                    a: contract.Artifact((out / a).stat().st_size, artifacts.sha256(out / a))
                    for a in (*disks, *(a for a in contract.ARTIFACTS if a not in formats.DISKS))
                },
                packages=packages,
                provenance=provenance.record(settings, source, lock_sha256),
            ).to_json()
        )
        final = output / name
        if final.exists():
            old = work / "previous"
            final.rename(old)
        out.rename(final)
        licensed = sum(1 for d in debs if d.license)
        progress(f"done: {final}")
        progress(f"  root hash {roothash}")
        progress(
            f"  SBOM {final / contract.SBOM}: SPDX 2.3, {len(debs)} Debian packages "
            f"({licensed} with a declared license) and berth"
        )
        return final
    finally:
        shutil.rmtree(work, ignore_errors=True)


def pcr_signing_key(settings: BuildSettings) -> pcrkey.PcrKey | None:
    """The key that signs the UKIs' PCR 11 policy: the key directory's, when it has one;
    `var_encryption: tpm2` needs it (one-line error without)."""
    if settings.var_encryption == "tpm2" and not settings.secure_boot_keys:
        raise UserError("var_encryption tpm2 seals /var under the UKIs' signed PCR policy: give the "
                        "key directory with its PCR key (--secure-boot-keys DIR, from `berth keys init`)")
    directory = Path(settings.secure_boot_keys) if settings.secure_boot_keys else None
    if directory is None or (settings.var_encryption == "none" and not pcrkey.present(directory)):
        return None
    return pcrkey.key_in(directory)


def _extract(settings: BuildSettings, out: Path) -> str:
    """Cut root, verity and UKI out of disk.raw; return the root hash, checked against the GPT."""
    disk = out / contract.DISK_RAW
    esp, root, verity = layout.built(artifacts.read_table(disk), settings)
    first_uki = f"/{contract.UKI_DIR}/{contract.uki_filename(settings.image_id, settings.version)}"
    artifacts.copy_from_esp(disk, esp, first_uki, out / contract.UKI)
    # The root artifact is the file system, not its slot: the zeros after it would be
    # hashed, written and read back by every host on every update for nothing (verity
    # covers the erofs's own blocks only; a slot's tail is never read).
    with disk.open("rb") as f:
        f.seek(root.offset)
        root_bytes = layout.erofs_size(f.read(4096))
    artifacts.copy_range(disk, root.offset, root_bytes, out / contract.ROOT_IMAGE)
    artifacts.copy_range(disk, verity.offset, verity.size, out / contract.VERITY_IMAGE)
    roothash = uki.roothash(uki.cmdline((out / contract.UKI).read_bytes()))
    if (root.part_uuid, verity.part_uuid) != contract.uuids_from_roothash(roothash):
        raise UserError(
            f"partition UUIDs {root.part_uuid}/{verity.part_uuid} do not derive from the UKI's "
            f"roothash={roothash}"
        )
    return roothash
