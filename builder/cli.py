"""`berth build`: the builder's verb. Imports only argparse at load time (the settings
table, whose flag rows are its options, when the parser is built)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from builder.settings import BuildSettings

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "image.yaml"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "build",
        help="build a host image (disk, root slot, verity, UKI, manifest)",
        description="Build the host OS image with mkosi into OUTPUT/<image_id>_<version>/.",
    )
    from builder.settings import FLAGS

    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="build settings (YAML)")
    for setting in FLAGS:  # one option per flag row of the settings table, checked as the file is
        parser.add_argument(setting.option, dest=setting.name, help=f"{setting.help} (overrides the config)")
    parser.add_argument(
        "--output", type=Path, default=Path("out"), help="where the artifact directory goes"
    )
    parser.add_argument("--quiet", action="store_true", help="print only the artifact directory")
    parser.add_argument(
        "--verify-reproducible",
        action="store_true",
        help="build a second time and compare every artifact; show where bytes differ (diffoscope)",
    )
    parser.set_defaults(handler=_build)

    lock = subparsers.add_parser(
        "lock",
        help="show or refresh the package lock (configs/packages.lock) every build installs",
        description="Every `berth build` installs exactly the Debian packages of "
        "configs/packages.lock and checks each .deb's sha256 against it. Without "
        "--refresh: print the lock's sections and hash.",
    )
    lock.add_argument(
        "--refresh",
        action="store_true",
        help="resolve the packages again (unpinned mkosi runs of the default config), "
        "write the lock and print what changed",
    )
    lock.add_argument(
        "--engine",
        action="append",
        choices=("docker", "podman"),
        help="refresh only this engine's section (and the initrd's); repeatable; default: both",
    )
    lock.set_defaults(handler=_lock)


def _build(args: argparse.Namespace) -> int:
    from builder import settings
    from builder.build import build

    chosen = settings.override(
        settings.load(args.config), **{s.name: getattr(args, s.name) for s in settings.FLAGS}
    )
    built = build(chosen, args.output, show=not args.quiet)
    if args.verify_reproducible:
        _verify(chosen, built, show=not args.quiet)
    print(built)
    return 0


def _lock(args: argparse.Namespace) -> int:
    from builder import packagelock, settings

    if args.refresh:
        from builder.lockrefresh import refresh

        changed = refresh(args.engine or settings.ENGINES)
        for line in changed:
            print(line)
        print(f"{packagelock.shown(packagelock.PATH)}: {len(changed) or 'no'} change(s)")
        return 0
    lock, sha256 = packagelock.read()
    for name, packages in lock.items():
        kept = sum(1 for p in packages if not p.removed)
        print(f"[{name}] {len(packages)} packages ({kept} in the image, {len(packages) - kept} purged)")
    print(f"{packagelock.shown(packagelock.PATH)} sha256 {sha256}")
    return 0


def _verify(chosen: BuildSettings, built: Path, *, show: bool) -> None:
    import shutil
    import sys
    import tempfile

    from builder import reproduce
    from builder.build import build
    from cli.errors import UserError
    from updater import contract

    second = Path(tempfile.mkdtemp(prefix=".verify-", dir=built.parent))
    try:
        if show:
            print("==> building again to compare", file=sys.stderr)
        again = build(chosen, second, show=show)
        names = sorted(
            contract.Manifest.from_json((built / contract.MANIFEST).read_text()).artifacts
        )
        differences = reproduce.compare(built, again, names)
        for d in differences:
            print(f"{d.name} differs: {d.sha256_a} vs {d.sha256_b}\n{d.where}\n")
        if differences:
            raise UserError(
                f"not reproducible: {', '.join(d.name for d in differences)} differ between "
                "two builds of the same inputs (details above)"
            )
        if show:
            print(
                f"==> reproducible: {len(names)} artifacts bit for bit the same",
                file=sys.stderr,
            )
    finally:
        shutil.rmtree(second, ignore_errors=True)
