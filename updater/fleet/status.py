"""`berth fleet status|locks|updates|plot`: the admin API's view, as tables or a PNG."""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from cli.errors import UserError
from updater.fleet.documents import DocumentError, DocumentT, LockLog, Status, Timeline, UpdateLog
from updater.fleet.locks import Peak, most_held
from updater.fleet.policy import most_in_flight, most_started_in_any_period
from updater.fleet.settings import format_duration


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


def read(document: type[DocumentT], data: Any) -> DocumentT:
    """The admin document an answer holds; a user error if the server sent another shape."""
    try:
        return document.from_json(data)
    except DocumentError as error:
        raise UserError(f"the fleet server's answer is not what this berth reads: {error}") from None


def format_status(status: Status) -> str:
    now = status.now
    lines = [time.strftime("fleet status at %Y-%m-%d %H:%M:%S UTC", time.gmtime(now))]
    admin_states = {r.version: r.state.value for r in status.releases}
    for release in status.catalog:
        state = "withdrawn" if release.withdrawn else admin_states.get(release.version, "active")
        lines.append(f"  release {release.image_id} {release.version}: {state}")
    for name, group in status.groups.items():
        states = ", ".join(f"{s} {n}" for s, n in sorted(group.hosts_by_state.items())) or "no hosts"
        versions = ", ".join(f"{v}: {n}" for v, n in sorted(group.hosts_by_version.items()))
        lines += [
            f"group {name}",
            f"  hosts      {states}" + (f"  (versions {versions})" if versions else ""),
            f"  rate used  {group.rate_used}/{group.rate_limit} this period",
            f"  locks      {len(group.locks_held)}/{group.max_concurrent_reboots}"
            + (f"  ({', '.join(group.locks_held)})" if group.locks_held else ""),
        ]
        for rollout in group.rollouts:
            if rollout.halted_reason:
                state = f"HALTED: {rollout.halted_reason}"
            elif rollout.finished_at:
                state = f"finished {_when(rollout.finished_at, now)}"
            else:
                state = "in progress"
            lines.append(
                f"  rollout    {rollout.version}: started {_when(rollout.started_at, now)},"
                f" wave {rollout.wave_percent:g} %, {state}"
            )
    return "\n".join(lines)


def print_status(server: str, token: str | None) -> int:
    print(format_status(read(Status, fetch(server, token, "/admin/status"))))
    return 0


def _clock(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1000):03d}"


def lock_peak(log: LockLog) -> Peak:
    return most_held((e.at, e.node_id, e.event) for e in log.events)


def format_lock_log(log: LockLog) -> str:
    events = log.events
    width = max((len(e.node_id) for e in events), default=4)
    lines = [
        f"reboot locks of group {log.group} (at most {log.max_concurrent_reboots} at once)",
        f"{'time (UTC)':<23}  {'node':<{width}}  event",
    ]
    lines += [f"{_clock(e.at)}  {e.node_id:<{width}}  {e.event.value}" for e in events]
    if not events:
        lines.append("(no lock events recorded)")
    peak = lock_peak(log)
    lines.append(
        f"most held at once: {peak.count} of {log.max_concurrent_reboots}"
        + (f" ({', '.join(peak.holders)}) at {_clock(peak.at)}" if peak.at is not None else "")
    )
    return "\n".join(lines)


def _print_group_log(
    server: str,
    token: str | None,
    path: str,
    group: str,
    as_json: bool,
    document: type[DocumentT],
    summary: Callable[[DocumentT], dict[str, Any]],
    table: Callable[[DocumentT], str],
) -> int:
    """Fetch ``path/GROUP``; print it as a table, or as JSON plus its ``summary``."""
    body = fetch(server, token, f"{path}/{urllib.parse.quote(group, safe='')}")
    log = read(document, body)
    print(json.dumps({**body, **summary(log)}, indent=2) if as_json else table(log))
    return 0


def _lock_summary(log: LockLog) -> dict[str, Any]:
    peak = lock_peak(log)
    return {"most_held": {"count": peak.count, "holders": list(peak.holders), "at": peak.at}}


def print_lock_log(server: str, token: str | None, group: str, as_json: bool) -> int:
    return _print_group_log(
        server, token, "/admin/locks", group, as_json, LockLog, _lock_summary, format_lock_log
    )


def rate_peaks(log: UpdateLog) -> dict[str, Any]:
    """What the log proves of the rate limit: its busiest period, and the most in flight at once."""
    updates = log.updates
    return {
        "most_started_in_any_period": most_started_in_any_period(
            (u.started_at for u in updates), log.rate.period_s
        ),
        "most_in_flight": most_in_flight((u.started_at, u.finished_at) for u in updates),
    }


def format_update_log(log: UpdateLog) -> str:
    updates, limit = log.updates, log.rate.max_updates
    period = format_duration(log.rate.period_s)
    node = max((len(u.node_id) for u in updates), default=4)
    version = max((len(u.version) for u in updates), default=7)
    header = ("started (UTC)", "finished (UTC)", "node", "version", "outcome")
    rows = [
        (
            _clock(u.started_at),
            "-" if u.finished_at is None else _clock(u.finished_at),
            u.node_id,
            u.version,
            u.outcome or "in_flight",
        )
        for u in updates
    ]
    lines = [f"updates of group {log.group} (at most {limit} started per {period}, and in flight)"]
    lines += [
        f"{s:<23}  {f:<23}  {n:<{node}}  {v:<{version}}  {o}" for s, f, n, v, o in [header, *rows]
    ]
    if not rows:
        lines.append("(no updates started)")
    peaks = rate_peaks(log)
    lines.append(
        f"most started in any {period}: {peaks['most_started_in_any_period']} of {limit};"
        f" most in flight at once: {peaks['most_in_flight']} of {limit}"
    )
    return "\n".join(lines)


def print_update_log(server: str, token: str | None, group: str, as_json: bool) -> int:
    return _print_group_log(
        server, token, "/admin/updates", group, as_json, UpdateLog, rate_peaks, format_update_log
    )


def plot_rollout(server: str, token: str | None, version: str, output: Path) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    events = read(Timeline, fetch(server, token, f"/admin/timeline/{version}")).events
    if not events:
        raise UserError(f"no host has reported anything about release {version} yet")
    start = events[0].at
    figure, axis = plt.subplots(figsize=(9, 5))
    for group in sorted({e.group for e in events}):
        for event, style in (
            ("downloading", ":"),
            ("blessed", "-"),
            ("rolled_back", "--"),
            ("failed", "-."),
        ):
            times = [
                (e.at - start) / 3600 for e in events if e.group == group and e.event == event
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
