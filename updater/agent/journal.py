"""The agent's systemd surfaces: structured journal records and sd_notify.

Uses python3-systemd's journal when present (in the image); elsewhere (a
developer venv, tests) records go to stderr with their fields appended.
sd_notify is a datagram on $NOTIFY_SOCKET, sent directly.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

try:
    from systemd import journal as _journal
except ImportError:  # python3-systemd is absent off the host image
    _journal = None

SYSLOG_IDENTIFIER = "berth-agent"
PRIORITY = {"error": 3, "warning": 4, "info": 6, "debug": 7}


def log(level: str, message: str, **fields: Any) -> None:
    """One journal record; ``fields`` become BERTH_<NAME>= fields (state, version, slot, ...)."""
    extra = {f"BERTH_{k.upper()}": str(v) for k, v in fields.items() if v is not None}
    if _journal is not None and os.environ.get("JOURNAL_STREAM") is not None:
        _journal.send(message, PRIORITY=PRIORITY[level], SYSLOG_IDENTIFIER=SYSLOG_IDENTIFIER, **extra)
        return
    suffix = "".join(f" {k.lower()[6:]}={v}" for k, v in extra.items())
    print(f"berth-agent: {level}: {message}{suffix}", file=sys.stderr, flush=True)


def notify(**values: str) -> bool:
    """Send READY=1 / STATUS=… / WATCHDOG=1 to systemd; False when not run by systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    payload = "\n".join(f"{k}={v}" for k, v in values.items()).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.sendto(payload, address)
    return True
