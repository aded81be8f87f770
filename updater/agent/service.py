"""The agent as a service: wiring from settings, the main loop, status, user checks."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cli.errors import UserError
from updater.agent.agent import Agent
from updater.agent.boundaries import ServerFleet, Standalone, UpdateStrategy
from updater.agent.entries import boot_order
from updater.agent.host import HostPaths, machine_id
from updater.agent.journal import log, notify
from updater.agent.settings import AgentSettings, credentials_dir_from_env, load_settings
from updater.agent.statefile import atomic_write
from updater.agent.swarmjoin import SwarmJoiner, Want
from updater.agent.swarmjoin import read_status as read_swarm_status
from updater.agent.swarmlabels import wanted
from updater.agent.updatestate import Idle
from updater.version import Version

# The watchdog (WatchdogSec= in the unit) is fed at least this often while waiting.
WATCHDOG_PING_S = 10.0


def node_id(settings: AgentSettings, paths: HostPaths) -> str:
    """The host's name to the fleet: the setting, else the machine ID, kept in the state
    directory the first time (so a host keeps its name if its machine ID changes)."""
    if settings.node_id:
        return settings.node_id
    path = Path(settings.state_dir) / "node-id"
    if path.exists():
        return path.read_text().strip()
    value = machine_id(paths)
    atomic_write(path, value.encode())
    return value


def swarm_joiner(settings: AgentSettings, name: str, strategy: UpdateStrategy) -> SwarmJoiner | None:
    """The swarm membership the settings declare (None: swarm_role is empty)."""
    if not settings.swarm_role:
        return None
    fleet = strategy if isinstance(strategy, ServerFleet) else None
    want = Want(name, settings.swarm_role, wanted(settings.group, settings.swarm_labels),
                settings.swarm_advertise_addr, fleet=fleet is not None)
    return SwarmJoiner(want, Path(settings.state_dir), fleet)


def make_agent(host_root: Path) -> Agent:
    paths = HostPaths.under(host_root)
    settings = read_settings_apart(paths)
    name = node_id(settings, paths)
    strategy: UpdateStrategy = (ServerFleet.from_settings(settings, name) if settings.server_url
                                else Standalone.from_settings(settings))
    return Agent(settings, paths, name, strategy, swarm=swarm_joiner(settings, name, strategy))


def run(agent: Agent, once: bool) -> int:
    # Ready means healthy: the facts `berth agent check` reports (slots, boot
    # entries, state) are read before READY=1, so the health check unit needs
    # only the unit's state and no second Python process on the boot's path.
    report = health(agent)
    notify(READY="1", STATUS=f"{report['state']} on slot {report['booted']['slot']}")
    log("info", f"agent started (node {agent.node_id}, group {agent.settings.group})")
    if once:
        step(agent)
        return 0
    # Each step imports the fleet client (http.client, ssl) in its child: held here, it
    # kept OpenSSL's libcrypto (~5 MiB) resident between polls, for an import that costs
    # a step a fraction of its TLS handshake (README, "Boot figures", issue 12).
    while True:
        delay = step_apart(agent)
        deadline = time.monotonic() + delay
        while (left := deadline - time.monotonic()) > 0:
            notify(WATCHDOG="1")
            time.sleep(min(left, WATCHDOG_PING_S))


def step(agent: Agent) -> float:
    """One step of the agent; the seconds until the next. Only a UserError stops the service."""
    try:
        return agent.step()
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - the service keeps running and says why
        log("error", f"step failed: {type(error).__name__}: {error}")
        return float(agent.settings.poll_interval_s)


def step_apart(agent: Agent) -> float:
    """step() in a forked child, so that what a step loads (TUF, cryptography,
    the fleet client, OpenSSL, write buffers) is given back when it ends and the
    agent idles at the size of its core. The child feeds the watchdog as the
    step itself did (NotifyAccess=all in the unit); the state the step changes is
    on disk (state.json), so nothing needs to come back but the delay."""
    answer = apart(lambda: repr(step(agent)), "agent step")
    if answer.startswith("crash "):
        log("error", f"step failed: {answer.removeprefix('crash ')}")
        return float(agent.settings.poll_interval_s)
    return float(answer)


def read_settings_apart(paths: HostPaths) -> AgentSettings:
    """load_settings() in a forked child: the YAML parser it needs is not kept
    resident by a service that reads its settings once. The same one reading, the
    same errors; only the values come back (text, numbers, a mapping: JSON)."""
    answer = apart(lambda: json.dumps(asdict(load_settings(paths.config, credentials_dir_from_env()))),
                   "reading the settings")
    if answer.startswith("crash "):
        raise RuntimeError(f"reading the settings failed: {answer.removeprefix('crash ')}")
    return AgentSettings(**json.loads(answer))


def apart(work: Callable[[], str], what: str) -> str:
    """work() in a forked child; its answer, or "crash …" for an unexpected exception.
    A UserError in the child is raised again here; a child killed by a signal ends
    the service as if it had been killed itself (OOM, a test's failpoint), so
    systemd's Restart= starts it afresh rather than the loop going on."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the parent's loop
        os.close(reader)
        code = 0
        try:
            answer = work()
        except UserError as error:
            answer, code = f"error {error}", 1
        except BaseException as error:  # noqa: BLE001 - the parent says why
            answer, code = f"crash {type(error).__name__}: {error}", 2
        with os.fdopen(writer, "wb") as pipe:
            pipe.write(answer.encode())
        os._exit(code)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        answer = pipe.read().decode(errors="replace")
    _, wait_status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(wait_status):
        raise SystemExit(f"{what} killed by signal {os.WTERMSIG(wait_status)}")
    if answer.startswith("error "):
        raise UserError(answer.removeprefix("error "))
    return answer


def _text(version: Version | None) -> str | None:
    return None if version is None else str(version)


def health(agent: Agent) -> dict[str, Any]:
    """What the agent sees of its host: slots, boot entries, state (`berth agent check`,
    and the service before READY=1). Everything of status() but the provisioning record,
    whose code (YAML, urllib) the service would otherwise keep resident."""
    facts = agent.facts()
    state = agent.store.load()
    entries = boot_order(facts.esp.entries())
    return {
        # Versions leave as their text: this is `berth agent status --json`'s document.
        "booted": {"version": str(facts.booted.version), "slot": facts.booted_slot.name,
                   "roothash": facts.booted.roothash},
        "slots": {name: {"label": s.root.label, "version": _text(s.label_version), "uuid": s.root.part_uuid}
                  for name, s in facts.slots.items()},
        "entries": [{"file": e.filename, "version": e.version, "tries_left": e.tries_left,
                     "tries_done": e.tries_done} for e in entries],
        "state": state.phase.name.value,
        "target": None if isinstance(state.phase, Idle) else state.phase.target.to_json(),
        "bad_versions": [str(v) for v in state.bad_versions],
        "unexplained_versions": [str(v) for v in state.unexplained_versions],
        "report_seq": state.seq,
    }


def status(agent: Agent) -> dict[str, Any]:
    """`berth agent status`: health() and the provisioning and swarm records."""
    from updater.agent import sbcheck
    from updater.provision.apply import read_status as read_provision_status

    return {
        **health(agent),
        "provision": read_provision_status(Path(agent.settings.state_dir)),
        "swarm": read_swarm_status(Path(agent.settings.state_dir)) if agent.settings.swarm_role else None,
        "secure_boot": sbcheck.status(agent.paths.secure_boot_db_cert.parent, agent.paths.efivars),
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
    swarm = report.get("swarm")
    if swarm:
        lines.append(f"swarm:   {swarm['role']}, {swarm['state']}: {swarm['detail']} (at {swarm['at']})")
    secure = report.get("secure_boot")
    if secure:
        for kind, said in (("trusted", "trusted (image and firmware db)"), ("waiting", "waiting for the firmware db"),
                           ("revoked", "revoked by dbx")):
            lines += [f"secure boot {said}: {c['subject']} {c['sha256']}" for c in secure[kind]]
    return "\n".join(lines)
