"""One provisioning pass: gather, check, apply — or keep the last good declaration.

A declaration that cannot be used (not YAML, an unknown key, a wrong type, an
archive missing) never reaches the host: the host applies the declaration it
kept from its last good pass (keys, settings, containers), so it stays
reachable and keeps running what it ran, and says why on the console, in the
journal (the unit's output) and in ``status.json``, which ``berth agent
status`` shows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cli.errors import UserError
from updater.provision import apply, sources
from updater.provision.schema import HostConfig, declare, parse_document


@dataclass
class Outcome:
    source: str = "none"
    applied: str = "defaults"  # declared, last good, defaults
    instance_id: str = ""
    containers: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def status(self) -> dict[str, Any]:
        return {"source": self.source, "applied": self.applied, "instance_id": self.instance_id,
                "containers": self.containers, "errors": self.errors,
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _usable(found: sources.Found, layout: apply.HostLayout) -> HostConfig:
    config = declare(found.meta, found.user_data, found.source)
    apply.copy_archives(layout, config, found.volume)
    return config


def provision(
    layout: apply.HostLayout,
    credentials_dir: Path | None,
    by_label: Path,
    dmi: Mapping[str, str],
    endpoints: sources.Endpoints,
    say: Callable[[str], None],
    *,
    run: apply.Run = apply.run_command,
    set_hostname: bool = True,
) -> Outcome:
    outcome = Outcome()

    def error(message: str) -> None:
        outcome.errors.append(message)
        say(f"error: {message}")

    found = sources.gather(credentials_dir, by_label, dmi, endpoints, error)
    config: HostConfig | None = None
    if found is not None:
        outcome.source, outcome.instance_id = found.source, found.meta.instance_id
        say(f"found {sources.describe(found)}")
        apply.keep_instance(layout, found.meta.instance_id, say)
        try:
            config, outcome.applied = _usable(found, layout), "declared"
        except (UserError, OSError) as problem:
            error(f"{problem}; keeping the last good declaration")
    if config is None:
        kept = apply.last_good(layout)
        if kept is not None:
            config, outcome.applied = parse_document(kept, str(layout.declared)), "last good"
    if config is not None:
        apply.apply_host(config, layout, outcome.source, set_hostname)
        for trouble in apply.converge(config, layout, run):
            error(trouble)
        if outcome.applied == "declared":
            apply.keep(config, layout)
        outcome.containers = [c.name for c in config.containers]
    if found is not None and found.source == "azure":
        try:
            sources.azure_report_ready(endpoints.azure_wire)
            say("reported ready to the Azure wire server")
        except (UserError, OSError) as problem:
            error(f"azure ready report: {problem}")
    apply.write_status(layout, outcome.status())
    say(f"provisioned: {outcome.applied} from {outcome.source}; containers: "
        f"{', '.join(outcome.containers) or 'none'}" + (f"; {len(outcome.errors)} error(s)" if outcome.errors else ""))
    return outcome
