"""`berth build`: the builder's verb. Imports only argparse at load time."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "image.yaml"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "build",
        help="build a host image (disk, root slot, verity, UKI, manifest)",
        description="Build the host OS image with mkosi into OUTPUT/<image_id>_<version>/.",
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="build settings (YAML)")
    parser.add_argument("--version", help="release version, dotted integers (overrides the config)")
    parser.add_argument(
        "--engine", help="container engine: docker or podman (overrides the config)"
    )
    parser.add_argument(
        "--formats", help="disk formats, comma-separated: raw, qcow2, vmdk, vhd, gce (overrides the config)"
    )
    parser.add_argument(
        "--output", type=Path, default=Path("out"), help="where the artifact directory goes"
    )
    parser.add_argument("--quiet", action="store_true", help="print only the artifact directory")
    parser.set_defaults(handler=_build)


def _build(args: argparse.Namespace) -> int:
    from builder import settings
    from builder.build import build

    chosen = settings.override(settings.load(args.config), version=args.version, engine=args.engine,
                               formats=args.formats)
    print(build(chosen, args.output, show=not args.quiet))
    return 0
