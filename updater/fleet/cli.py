"""`berth serve` and `berth fleet status|locks|updates|plot|simulate` (argparse only at import time)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

DEFAULT_DB = "sqlite:////var/lib/berth/fleet.sqlite3"


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser(
        "serve", help="run the fleet server (repository, rollouts, locks)"
    )
    serve.add_argument("--config", type=Path, default=None, help="fleet.yaml (default: built-in)")
    serve.add_argument(
        "--db",
        default=os.environ.get("BERTH_FLEET_DB", DEFAULT_DB),
        help="sqlite:///RELATIVE/PATH, sqlite:////ABSOLUTE/PATH or postgresql://… (default %(default)s)",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=1, help="server processes (default 1)")
    serve.add_argument("--tls-cert", type=Path, help="PEM certificate (chain) to serve HTTPS with")
    serve.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    serve.add_argument(
        "--insecure-http",
        action="store_true",
        help="serve plain HTTP instead (tokens and credentials in clear text; tests and labs)",
    )
    serve.add_argument(
        "--test-clock",
        action="store_true",
        help="let POST /admin/clock move the server's time (simulator and tests only)",
    )
    serve.set_defaults(handler=_serve)

    fleet = subparsers.add_parser("fleet", help="inspect and simulate rollouts")
    verbs = fleet.add_subparsers(dest="fleet_verb", metavar="VERB", required=True)
    for name, help_text, handler in (
        ("status", "hosts per state, waves, rate used, locks and halts per group", _status),
        ("locks", "a group's reboot-lock log and the most locks ever held at once", _locks),
        (
            "updates",
            "a group's counted updates, its busiest rate period and the most in flight at once",
            _updates,
        ),
        ("plot", "write a PNG of a release's rollout over time", _plot),
    ):
        verb = verbs.add_parser(name, help=help_text)
        verb.add_argument("--server", default="http://127.0.0.1:8080")
        verb.add_argument(
            "--token",
            default=os.environ.get("BERTH_ADMIN_TOKEN"),
            help="admin token (default $BERTH_ADMIN_TOKEN)",
        )
        verb.set_defaults(handler=handler)
        if name in ("locks", "updates"):
            verb.add_argument("group", metavar="GROUP", help="the group whose log to show")
            verb.add_argument(
                "--json", action="store_true", help="print the log and its peaks as JSON"
            )
        elif name == "plot":
            verb.add_argument("--version", required=True, help="the release to plot")
            verb.add_argument("--output", type=Path, default=Path("rollout.png"))

    sim = verbs.add_parser("simulate", help="drive N simulated hosts against a real `berth serve`")
    sim.add_argument("--hosts", type=int, default=1000)
    sim.add_argument("--policy", type=Path, required=True, help="fleet.yaml to simulate")
    sim.add_argument("--releases", default="1.1.0", help="versions published one after the other")
    sim.add_argument(
        "--fail",
        action="append",
        default=[],
        metavar="VERSION=SHARE",
        help="share of hosts whose update to VERSION rolls back (repeatable)",
    )
    sim.add_argument(
        "--split",
        default="",
        metavar="GROUP=N,…",
        help="hosts per group (default: spread evenly over the policy's groups)",
    )
    sim.add_argument("--poll", default="30m", help="simulated poll interval of every host")
    sim.add_argument("--tick", default="10m", help="simulated time per step")
    sim.add_argument("--max-time", default="30d", help="give up after this much simulated time")
    sim.add_argument(
        "--db", default=None, help="database for the server (default: temporary SQLite)"
    )
    sim.add_argument("--workers", type=int, default=2, help="server processes")
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument("--json", type=Path, default=None, help="also write the summary here")
    sim.set_defaults(handler=_simulate)


def _serve(args: argparse.Namespace) -> int:
    from updater.fleet.serve import Tls, serve

    tls = Tls(args.tls_cert, args.tls_key, args.insecure_http)
    return serve(args.config, args.db, args.host, args.port, args.workers, args.test_clock, tls)


def _status(args: argparse.Namespace) -> int:
    from updater.fleet.status import print_status

    return print_status(args.server, args.token)


def _locks(args: argparse.Namespace) -> int:
    from updater.fleet.status import print_lock_log

    return print_lock_log(args.server, args.token, args.group, args.json)


def _updates(args: argparse.Namespace) -> int:
    from updater.fleet.status import print_update_log

    return print_update_log(args.server, args.token, args.group, args.json)


def _plot(args: argparse.Namespace) -> int:
    from updater.fleet.status import plot_rollout

    return plot_rollout(args.server, args.token, args.version, args.output)


def _simulate(args: argparse.Namespace) -> int:
    from updater.fleet.simulate import run_cli

    return run_cli(args)
