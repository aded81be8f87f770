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

from builder import artifacts, driver, fault, layout, manifest, provenance, sbom, uki
from builder.lint import lint
from builder.settings import BuildSettings
from cli.cache import cache_dir
from cli.errors import UserError

ARTIFACTS = ("disk.raw", "disk.qcow2", "root.erofs", "root.verity", "uki.efi", sbom.FILE_NAME)
PYTHON_DIR = "usr/lib/berth/python"
AGENT_TREE = driver.REPO / "updater" / "agent" / "image"
WRAPPER = """#!/usr/bin/python3
import sys
sys.path.insert(0, "/usr/lib/berth/python")
from cli.main import main
sys.exit(main())
"""


class _Progress:
    def __init__(self, show: bool) -> None:
        self.show = show
        self.start = time.monotonic()

    def __call__(self, message: str) -> None:
        if self.show:
            print(f"==> [{time.monotonic() - self.start:5.0f}s] {message}", file=sys.stderr)


def stage_agent(tree: Path) -> list[Path]:
    """Extra trees for mkosi: berth's Python packages plus the agent's root overlay."""
    python = tree / PYTHON_DIR
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(driver.REPO / "cli", python / "cli", ignore=ignore)
    shutil.copytree(
        driver.REPO / "updater",
        python / "updater",
        ignore=lambda d, names: (
            ignore(d, names) | ({"image"} if Path(d) == AGENT_TREE.parent else set())
        ),
    )
    wrapper = tree / "usr/bin/berth"
    wrapper.parent.mkdir(parents=True)
    wrapper.write_text(WRAPPER)
    wrapper.chmod(0o755)
    return [tree, AGENT_TREE] if AGENT_TREE.is_dir() else [tree]


def build(settings: BuildSettings, output: Path, *, show: bool = True) -> Path:
    """Build the image and return its artifact directory `output/<id>_<version>/`."""
    progress = _Progress(show)
    name = settings.artifact_name
    cache = cache_dir()
    log = cache / "logs" / f"build-{name}-{settings.engine}.log"
    output.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=output))
    try:
        out = work / "artifacts"
        out.mkdir()
        repart = work / "repart.d"
        repart.mkdir()
        for filename, text in layout.repart_definitions(settings).items():
            (repart / filename).write_text(text)
        mirror = driver.host_mirror()
        source = provenance.source(driver.REPO)
        progress(f"building the initrd with mkosi; full log: {log}")
        driver.run(
            driver.initrd_command(
                output_dir=work / "initrd", mirror=mirror, cache=cache, epoch=source.epoch
            ),
            log,
            show=show,
        )
        initrd = next((work / "initrd").glob("initrd*"))
        progress(f"building {name} ({settings.engine}) with mkosi")
        driver.run(
            driver.image_command(
                settings,
                output_dir=work / "mkosi",
                initrd=initrd,
                repart_dir=repart,
                extra_trees=[
                    *stage_agent(work / "agent-tree"),
                    *fault.extra_trees(settings.fault, work / "fault-tree"),
                ],
                mirror=mirror,
                cache=cache,
                epoch=source.epoch,
            ),
            log,
            show=show,
            append=True,
        )

        progress("extracting root, verity and UKI from the disk image")
        (work / "mkosi" / "image.raw").rename(out / "disk.raw")
        roothash = _extract(settings, out)
        with (out / "root.erofs").open("rb") as f:
            layout.check_slot_fit(layout.erofs_size(f.read(4096)), settings)

        progress("linting the final root (no package manager, compilers, stray setuid)")
        rootfs = work / "rootfs"
        artifacts.extract_root(out / "root.erofs", rootfs)
        findings = lint(rootfs)
        if findings:
            raise UserError(
                f"lint found {len(findings)} problem(s) in the root: " + "; ".join(findings)
            )

        progress("converting to qcow2")
        artifacts.to_qcow2(out / "disk.raw", out / "disk.qcow2")

        progress("writing the SBOM (SPDX 2.3) and manifest.json")
        mkosi_manifest = json.loads((work / "mkosi" / "image.manifest").read_text())
        packages = manifest.packages(
            mkosi_manifest, (work / "mkosi" / "package-sizes.tsv").read_text()
        )
        debs = sbom.collect(
            work / "mkosi" / "sbom-input",
            keep=[p["name"] for p in packages],
            archives=driver.package_archives(cache),
        )
        (out / sbom.FILE_NAME).write_text(
            json.dumps(
                sbom.document(
                    image=name,
                    version=settings.version,
                    roothash=roothash,
                    root_sha256=artifacts.sha256(out / "root.erofs"),
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
        (out / "manifest.json").write_text(
            manifest.render(
                image_id=settings.image_id,
                version=settings.version,
                engine=settings.engine,
                roothash=roothash,
                slot_size=slots.slot_size,
                verity_slot_size=slots.verity_slot_size,
                artifacts={
                    a: manifest.Artifact((out / a).stat().st_size, artifacts.sha256(out / a))
                    for a in ARTIFACTS
                },
                packages=packages,
                provenance=provenance.record(settings, source),
            )
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
            f"  SBOM {final / sbom.FILE_NAME}: SPDX 2.3, {len(debs)} Debian packages "
            f"({licensed} with a declared license) and berth"
        )
        return final
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _extract(settings: BuildSettings, out: Path) -> str:
    """Cut root, verity and UKI out of disk.raw; return the root hash, checked against the GPT."""
    disk = out / "disk.raw"
    table = artifacts.read_table(disk)
    name = settings.artifact_name
    esp = layout.find(table, layout.TYPE_ESP, layout.ESP_LABEL)
    root = layout.find(table, layout.TYPE_ROOT, name)
    verity = layout.find(table, layout.TYPE_ROOT_VERITY, f"{name}_verity")
    artifacts.copy_from_esp(disk, esp, f"/EFI/Linux/{name}.efi", out / "uki.efi")
    artifacts.copy_range(disk, root.start, root.size, out / "root.erofs")
    artifacts.copy_range(disk, verity.start, verity.size, out / "root.verity")
    roothash = uki.roothash(uki.cmdline((out / "uki.efi").read_bytes()))
    if (root.uuid, verity.uuid) != layout.uuids_from_roothash(roothash):
        raise UserError(
            f"partition UUIDs {root.uuid}/{verity.uuid} do not derive from the UKI's roothash={roothash}"
        )
    return roothash
