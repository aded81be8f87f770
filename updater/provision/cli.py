"""`berth provision`: apply the host's declaration (run by berth-provision.service)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "provision",
        help="gather this host's declaration (credential, config volume, cloud metadata) and apply it",
    )
    parser.add_argument("--root", type=Path, default=Path("/"),
                        help="write below this directory instead of / (and leave the host name alone)")
    parser.add_argument("--by-label", type=Path, default=Path("/dev/disk/by-label"),
                        help="where config volumes show up by label")
    parser.add_argument("--dmi", type=Path, default=Path("/sys/class/dmi/id"),
                        help="DMI facts that say which cloud this could be")
    parser.add_argument("--metadata-url", default="http://169.254.169.254", help="the metadata service")
    parser.add_argument("--azure-wire-url", default="http://168.63.129.16", help="Azure's wire server")
    parser.set_defaults(handler=_provision)


def _provision(args: argparse.Namespace) -> int:
    from updater.agent.settings import credentials_dir_from_env
    from updater.provision.apply import HostLayout
    from updater.provision.provision import provision
    from updater.provision.sources import Endpoints, dmi

    layout = HostLayout() if args.root == Path("/") else HostLayout.under(args.root)
    outcome = provision(
        layout, credentials_dir_from_env(), args.by_label, dmi(args.dmi),
        Endpoints(args.metadata_url, args.azure_wire_url),
        lambda line: print(f"berth-provision: {line}", flush=True),
        set_hostname=args.root == Path("/"),
    )
    # A failed unit is one more place the operator sees it; the boot goes on regardless.
    return 1 if outcome.errors else 0
