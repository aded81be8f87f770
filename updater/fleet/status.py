"""`berth fleet status|locks|plot`: the admin API's view, as tables or a PNG."""

from __future__ import annotations

import json
import time
import urllib.parse
from pathlib import Path
from typing import Any

import requests

from cli.errors import UserError
from updater.fleet.locks import LockEventKind, Peak, most_held


def fetch(server: str, token: str | None, path: str) -> Any:
    if not token:
        raise UserError("the admin API needs a token: pass --token or set BERTH_ADMIN_TOKEN")
    try:
        response = requests.get(
            server.rstrip("/") + path, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
    except requests.RequestException as error:
        raise UserError(f"cannot reach the fleet server at {server}: {error}") from None
    if response.status_code != 200:
        detail = (
            response.json().get("error")
            if response.headers.get("content-type", "").startswith("application/json")
            else response.text[:200]
        )
        raise UserError(f"{path}: HTTP {response.status_code}: {detail}")
    return response.json()


def _when(epoch: float | None, now: float) -> str:
    if epoch is None:
        return "-"
    ago = now - epoch
    return f"{ago / 3600:.1f}h ago" if ago >= 0 else f"in {-ago / 3600:.1f}h"


def format_status(status: dict[str, Any]) -> str:
    now = status["now"]
    lines = [time.strftime("fleet status at %Y-%m-%d %H:%M:%S UTC", time.gmtime(now))]
    admin_states = {r["version"]: r["state"] for r in status["releases"]}
    for release in status["catalog"]:
        state = (
            "withdrawn" if release["withdrawn"] else admin_states.get(release["version"], "active")
        )
        lines.append(f"  release {release['image_id']} {release['version']}: {state}")
    for name, group in status["groups"].items():
        states = (
            ", ".join(f"{s} {n}" for s, n in sorted(group["hosts_by_state"].items())) or "no hosts"
        )
        versions = ", ".join(f"{v}: {n}" for v, n in sorted(group["hosts_by_version"].items()))
        lines += [
            f"group {name}",
            f"  hosts      {states}" + (f"  (versions {versions})" if versions else ""),
            f"  rate used  {group['rate_used']}/{group['rate_limit']} this period",
            f"  locks      {len(group['locks_held'])}/{group['max_concurrent_reboots']}"
            + (f"  ({', '.join(group['locks_held'])})" if group["locks_held"] else ""),
        ]
        for rollout in group["rollouts"]:
            if rollout["halted_reason"]:
                state = f"HALTED: {rollout['halted_reason']}"
            elif rollout["finished_at"]:
                state = f"finished {_when(rollout['finished_at'], now)}"
            else:
                state = "in progress"
            lines.append(
                f"  rollout    {rollout['version']}: started {_when(rollout['started_at'], now)},"
                f" wave {rollout['wave_percent']:g} %, {state}"
            )
    return "\n".join(lines)


def print_status(server: str, token: str | None) -> int:
    print(format_status(fetch(server, token, "/admin/status")))
    return 0


def _clock(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1000):03d}"


def lock_peak(log: dict[str, Any]) -> Peak:
    return most_held((e["at"], e["node_id"], LockEventKind(e["event"])) for e in log["events"])


def format_lock_log(log: dict[str, Any]) -> str:
    events = log["events"]
    width = max((len(e["node_id"]) for e in events), default=4)
    lines = [
        f"reboot locks of group {log['group']} (at most {log['max_concurrent_reboots']} at once)",
        f"{'time (UTC)':<23}  {'node':<{width}}  event",
    ]
    lines += [f"{_clock(e['at'])}  {e['node_id']:<{width}}  {e['event']}" for e in events]
    if not events:
        lines.append("(no lock events recorded)")
    peak = lock_peak(log)
    lines.append(
        f"most held at once: {peak.count} of {log['max_concurrent_reboots']}"
        + (f" ({', '.join(peak.holders)}) at {_clock(peak.at)}" if peak.at is not None else "")
    )
    return "\n".join(lines)


def print_lock_log(server: str, token: str | None, group: str, as_json: bool) -> int:
    log = fetch(server, token, f"/admin/locks/{urllib.parse.quote(group, safe='')}")
    if as_json:
        peak = lock_peak(log)
        log["most_held"] = {"count": peak.count, "holders": list(peak.holders), "at": peak.at}
        print(json.dumps(log, indent=2))
    else:
        print(format_lock_log(log))
    return 0


def plot_rollout(server: str, token: str | None, version: str, output: Path) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    events = fetch(server, token, f"/admin/timeline/{version}")["events"]
    if not events:
        raise UserError(f"no host has reported anything about release {version} yet")
    start = events[0]["at"]
    figure, axis = plt.subplots(figsize=(9, 5))
    for group in sorted({e["group"] for e in events}):
        for event, style in (
            ("downloading", ":"),
            ("blessed", "-"),
            ("rolled_back", "--"),
            ("failed", "-."),
        ):
            times = [
                (e["at"] - start) / 3600
                for e in events
                if e["group"] == group and e["event"] == event
            ]
            if times:
                axis.step(
                    times, range(1, len(times) + 1), style, where="post", label=f"{group}: {event}"
                )
    axis.set_xlabel(f"hours since the first report about {version}")
    axis.set_ylabel("hosts (cumulative)")
    axis.set_title(f"rollout of {version}")
    axis.legend(loc="upper left", fontsize="small")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(output, dpi=100)
    print(f"wrote {output}")
    return 0
