"""The `berth` command: a thin dispatcher over the rooms' own verbs.

Each room (builder, updater.agent, updater.fleet, qemu) exposes
``register(subparsers)`` in a module that imports only argparse at load time,
so `berth --help` is fast and a host, which carries only the host code
(builder/payload.py: no builder, publisher, fleet server or lab), lists only
its own verbs (`berth agent …`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from cli.errors import UserError

# (module, what it needs to be present) — a room missing from this install
# (e.g. the builder inside a host image) simply contributes no verbs.
ROOMS: tuple[str, ...] = (
    "builder.cli",
    "updater.publish.cli",
    "updater.agent.cli",
    "updater.provision.cli",
    "updater.fleet.cli",
    "qemu.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="berth",
        description="Build immutable container hosts, update them A/B, roll out across a fleet.",
    )
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for module_name in ROOMS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            # Only a room that is absent altogether is skipped; a broken import
            # inside a present room must surface.
            if error.name is not None and module_name.startswith(error.name):
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.error(f"'{args.verb}' needs a sub-command")
    try:
        return int(handler(args) or 0)
    except UserError as error:
        print(f"berth: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
