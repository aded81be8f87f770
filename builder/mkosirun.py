"""mkosi's two runs of a build, the initrd and the image, with the package lock's
versions, and the check of what they installed against it.

`berth build` runs them pinned; `berth lock --refresh` runs them unpinned and
locks what they installed (builder/packagelock.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from builder import driver, fault, layout, manifest, packagelock, payload, pcrkey, sbkeys, varcrypt
from builder.settings import BuildSettings


def run(
    settings: BuildSettings,
    work: Path,
    *,
    cache: Path,
    epoch: int,
    log: Path,
    show: bool,
    lock: packagelock.Lock | None,
    sb_keys: sbkeys.SecureBootKeys | None = None,
    pcr_key: pcrkey.PcrKey | None = None,
    progress: Callable[[str], None],
) -> tuple[tuple[packagelock.Locked, ...], tuple[packagelock.Locked, ...]]:
    """mkosi's two runs, the initrd into `work/initrd` and the image into `work/mkosi`,
    with the versions of `lock` (None: unpinned, as a lock refresh resolves them).
    Returns what each installed; with a lock, anything that differs from it fails."""
    repart = work / "repart.d"
    repart.mkdir()
    for filename, text in layout.repart_definitions(settings).items():
        (repart / filename).write_text(text)
    mirror = driver.host_mirror()
    source = packagelock.shown(packagelock.PATH)
    locked = (
        {
            name: packagelock.section(lock, name, source)
            for name in (packagelock.INITRD, settings.engine)
        }
        if lock is not None
        else None
    )
    archives = driver.package_archives(cache)

    def checked(name: str, got: tuple[packagelock.Locked, ...]) -> tuple[packagelock.Locked, ...]:
        if locked is not None:
            found = packagelock.mismatches(locked[name], got)
            if found:
                raise packagelock.mismatch_error(source, name, found)
        return got

    def pins(name: str) -> list[str] | None:
        return None if locked is None else packagelock.pins(locked[name])

    progress(f"building the initrd with mkosi; full log: {log}")
    driver.run(
        driver.initrd_command(
            output_dir=work / "initrd",
            mirror=mirror,
            cache=cache,
            epoch=epoch,
            pins=pins(packagelock.INITRD),
        ),
        log,
        show=show,
    )
    initrd_packages = checked(
        packagelock.INITRD, packagelock.built(work / "initrd", None, archives)
    )
    initrd = next((work / "initrd").glob("initrd*"))
    progress(f"building {settings.artifact_name} ({settings.engine}) with mkosi")
    driver.run(
        driver.image_command(
            settings,
            output_dir=work / "mkosi",
            initrd=initrd,
            repart_dir=repart,
            extra_trees=[
                *payload.stage(work / "agent-tree"),
                *fault.extra_trees(settings.fault, work / "fault-tree"),
                *(sbkeys.image_tree(sb_keys, work / "sb-tree") if sb_keys else []),
                *(varcrypt.image_tree(pcr_key, settings.var_size_mib, work / "var-tree")
                  if pcr_key and settings.var_encryption == "tpm2" else []),
            ],
            mirror=mirror,
            cache=cache,
            epoch=epoch,
            pins=pins(settings.engine),
        ),
        log,
        show=show,
        append=True,
    )
    final = [
        p.name
        for p in manifest.packages(json.loads((work / "mkosi" / "image.manifest").read_text()), "")
    ]
    image_packages = checked(settings.engine, packagelock.built(work / "mkosi", final, archives))
    return initrd_packages, image_packages
