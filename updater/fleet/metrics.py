"""Prometheus text exposition of the fleet's state, read from the database.

Figures come from the shared database rather than per-process counters, so
any of several server processes reports the same, whole-fleet numbers.
"""

from __future__ import annotations

from collections import Counter
from typing import Any


def _line(name: str, labels: dict[str, str], value: float) -> str:
    text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{text}}} {value:g}"


def render_metrics(counts: dict[str, list[tuple[Any, ...]]], now: float) -> str:
    lines = [
        "# HELP berth_fleet_hosts Hosts known to the fleet server, by group and update state.",
        "# TYPE berth_fleet_hosts gauge",
        *(_line("berth_fleet_hosts", {"group": g, "state": s}, n) for g, s, n in counts["hosts"]),
        "# HELP berth_fleet_updates_total Updates started, by group and outcome (in_flight: none yet).",
        "# TYPE berth_fleet_updates_total counter",
        *(
            _line("berth_fleet_updates_total", {"group": g, "outcome": o}, n)
            for g, o, n in counts["updates"]
        ),
        "# HELP berth_fleet_reboot_locks_held FleetLock slots held (unexpired), by group.",
        "# TYPE berth_fleet_reboot_locks_held gauge",
    ]
    held = Counter(group for group, expires_at in counts["locks"] if expires_at > now)
    lines += [
        _line("berth_fleet_reboot_locks_held", {"group": g}, n) for g, n in sorted(held.items())
    ]
    lines += [
        "# HELP berth_fleet_rollout_halted 1 for each group and release the automatic halt stopped.",
        "# TYPE berth_fleet_rollout_halted gauge",
        *(
            _line("berth_fleet_rollout_halted", {"group": g, "version": v}, 1)
            for g, v in counts["halted"]
        ),
    ]
    return "\n".join(lines) + "\n"
