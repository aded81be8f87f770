"""The agent as a service: wiring from settings, the main loop, status, user checks."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

from cli.errors import UserError
from updater.agent.agent import Agent
from updater.agent.entries import boot_order
from updater.agent.host import HostPaths
from updater.agent.journal import log, notify
from updater.agent.ports import Fleet, ServerFleet, Standalone
from updater.agent.settings import credentials_dir_from_env, load_settings
from updater.provision.apply import read_status as read_provision_status

# The watchdog (WatchdogSec= in the unit) is fed at least this often while waiting.
WATCHDOG_PING_S = 10.0


def make_agent(host_root: Path) -> Agent:
    paths = HostPaths.under(host_root)
    settings = load_settings(paths.config, credentials_dir_from_env())
    agent = Agent(settings, paths, Standalone())
    if settings.server_url:
        fleet: Fleet = ServerFleet.from_settings(settings, agent.node_id())
        agent.fleet = fleet
    return agent


def run(agent: Agent, once: bool) -> int:
    notify(READY="1", STATUS="starting")
    log("info", f"agent started (node {agent.node_id()}, group {agent.settings.group})")
    while True:
        try:
            delay = agent.step()
        except UserError:
            raise
        except Exception as error:  # noqa: BLE001 - the service keeps running and says why
            log("error", f"step failed: {type(error).__name__}: {error}")
            delay = agent.settings.poll_interval_s
        if once:
            return 0
        deadline = time.monotonic() + delay
        while (left := deadline - time.monotonic()) > 0:
            notify(WATCHDOG="1")
            time.sleep(min(left, WATCHDOG_PING_S))


def status(agent: Agent) -> dict[str, Any]:
    facts = agent.facts()
    state = agent.store.load()
    entries = boot_order(facts.esp.entries())
    return {
        "booted": {"version": facts.booted.version, "slot": facts.booted_slot.name,
                   "roothash": facts.booted.roothash},
        "slots": {name: {"label": s.root.label, "version": s.label_version, "uuid": s.root.part_uuid}
                  for name, s in facts.slots.items()},
        "entries": [{"file": e.filename, "version": e.version, "tries_left": e.tries_left,
                     "tries_done": e.tries_done} for e in entries],
        "state": state.state.value,
        "target": None if state.target is None else vars(state.target),
        "bad_versions": list(state.bad_versions),
        "unexplained_versions": list(state.unexplained_versions),
        "report_seq": state.seq,
        "provision": read_provision_status(Path(agent.settings.state_dir)),
    }


def render_status(report: dict[str, Any]) -> str:
    booted = report["booted"]
    lines = [f"booted:  {booted['version']} from slot {booted['slot']}",
             f"state:   {report['state']}" + (f" -> {report['target']['version']} in slot "
                                              f"{report['target']['slot']}" if report["target"] else "")]
    for name, slot in report["slots"].items():
        lines.append(f"slot {name}:  {slot['version'] or 'empty'} ({slot['label']})")
    lines.append("entries (boot order):")
    for entry in report["entries"]:
        tries = "blessed" if entry["tries_left"] is None else f"{entry['tries_left']} tries left, {entry['tries_done']} done"
        lines.append(f"  {entry['file']}: {tries}")
    if report["bad_versions"]:
        lines.append(f"rolled back before: {', '.join(report['bad_versions'])}")
    if report["unexplained_versions"]:
        lines.append(f"fell back for no cause seen, held back: {', '.join(report['unexplained_versions'])}")
    provision = report.get("provision")
    if provision:
        lines.append(f"provision: {provision['applied']} from {provision['source']} at {provision['at']}, "
                     f"containers: {', '.join(provision['containers']) or 'none'}")
        lines += [f"  error: {error}" for error in provision["errors"]]
    return "\n".join(lines)


def run_user_checks(agent: Agent) -> int:
    """Run every executable in /etc/berth/health.d and <state_dir>/health.d; fail if one fails."""
    directories = [agent.paths.config.parent / "health.d", Path(agent.settings.state_dir) / "health.d"]
    failed = 0
    for directory in directories:
        if not directory.is_dir():
            continue
        for check in sorted(directory.iterdir()):
            if not (check.is_file() and os.access(check, os.X_OK)):
                continue
            result = subprocess.run([str(check)], capture_output=True, text=True, timeout=300, check=False)
            level = "info" if result.returncode == 0 else "error"
            log(level, f"health check {check}: exit {result.returncode} {result.stderr.strip()[-200:]}")
            failed += result.returncode != 0
    return 1 if failed else 0
