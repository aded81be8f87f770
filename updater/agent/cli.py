"""`berth agent …`: the on-host update agent's verbs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    agent = subparsers.add_parser("agent", help="the on-host update agent")
    agent.add_argument("--host-root", type=Path, default=Path("/"),
                       help="read /proc/cmdline, /etc/os-release, /etc/machine-id, /etc/berth below this")
    verbs = agent.add_subparsers(dest="agent_verb", metavar="VERB", required=True)
    run = verbs.add_parser("run", help="check, download, stage and reboot (the service's main loop)")
    run.add_argument("--once", action="store_true", help="one step, then exit")
    run.set_defaults(handler=_run)
    status = verbs.add_parser("status", help="slots, versions, boot entries and tries, agent state")
    status.add_argument("--json", action="store_true", help="machine-readable")
    status.set_defaults(handler=_status)
    check = verbs.add_parser("check", help="health check: the agent can see its slots and state")
    check.set_defaults(handler=_check)
    user = verbs.add_parser("check-user", help="health check: run the executables in health.d")
    user.set_defaults(handler=_check_user)
    sb_db = verbs.add_parser("secure-boot-db", help="add the image's incoming Secure Boot db certificates "
                             "to the firmware's db (a db key rotation's transition release)")
    sb_db.add_argument("--from", dest="source", type=Path, metavar="DIR",
                       help="where the *.append.auth files are (default: the image's usr/lib/berth/secure-boot)")
    sb_db.add_argument("--efivars", type=Path, default=None, help="efivarfs (default /sys/firmware/efi/efivars)")
    sb_db.set_defaults(handler=_secure_boot_db)


def _agent(args: argparse.Namespace) -> Any:
    from updater.agent.service import make_agent

    return make_agent(args.host_root)


def _run(args: argparse.Namespace) -> int:
    from updater.agent.service import run

    return run(_agent(args), once=args.once)


def _status(args: argparse.Namespace) -> int:
    import json

    from updater.agent.service import render_status, status

    report = status(_agent(args))
    print(json.dumps(report, indent=1) if args.json else render_status(report))
    return 0


def _check(args: argparse.Namespace) -> int:
    from updater.agent.service import health

    report = health(_agent(args))
    print(f"agent healthy: {report['state']} on slot {report['booted']['slot']}")
    return 0


def _check_user(args: argparse.Namespace) -> int:
    # Not the whole agent: this runs on every boot's path (berth-check-user.service).
    from updater.agent.host import HostPaths
    from updater.agent.usercheck import check_directories, run_user_checks

    return run_user_checks(check_directories(HostPaths.under(args.host_root)))


def _secure_boot_db(args: argparse.Namespace) -> int:
    # Not the whole agent: a unit runs this on every boot of a transition release.
    from updater.agent.host import HostPaths
    from updater.agent.sbappend import apply

    paths = HostPaths.under(args.host_root)
    outcome = apply(args.source or paths.secure_boot_db_cert.parent, args.efivars or paths.efivars)
    for line in outcome.lines:
        print(f"secure-boot-db: {line}")
    return 1 if outcome.failed else 0
