"""The agent's systemd surfaces: structured journal records and sd_notify.

Journal records go to journald's native socket directly (the protocol is a
datagram of KEY=value fields, https://systemd.io/JOURNAL_NATIVE_PROTOCOL/):
python3-systemd's binding did the same, but with libsystemd, logging and
traceback it kept ~1.7 MiB resident in the idle service. When stderr is not the
journal (a developer's shell, tests), or the socket refuses a record, it goes to
stderr with its fields appended. sd_notify is a datagram on $NOTIFY_SOCKET, sent directly.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
from typing import Any

SYSLOG_IDENTIFIER = "berth-agent"
JOURNAL_SOCKET = "/run/systemd/journal/socket"
PRIORITY = {"error": 3, "warning": 4, "info": 6, "debug": 7}


def log(level: str, message: str, **fields: Any) -> None:
    """One journal record; ``fields`` become BERTH_<NAME>= fields (state, version, slot, ...)."""
    extra = {f"BERTH_{k.upper()}": str(v) for k, v in fields.items() if v is not None}
    if _stderr_is_the_journal() and _send({
        "MESSAGE": message, "PRIORITY": str(PRIORITY[level]), "SYSLOG_IDENTIFIER": SYSLOG_IDENTIFIER, **extra,
    }):
        return
    suffix = "".join(f" {k.lower()[6:]}={v}" for k, v in extra.items())
    print(f"berth-agent: {level}: {message}{suffix}", file=sys.stderr, flush=True)


def _stderr_is_the_journal() -> bool:
    """systemd's own test (systemd.exec(5), $JOURNAL_STREAM): a service whose stderr
    journald reads; not a child whose stderr a caller has redirected."""
    value = os.environ.get("JOURNAL_STREAM")
    if not value:
        return False
    try:
        st = os.fstat(2)
    except OSError:
        return False
    return value == f"{st.st_dev}:{st.st_ino}"


def record(fields: dict[str, str]) -> bytes:
    """One native-protocol datagram: KEY=value lines; a value holding a newline as
    KEY, newline, its length (64-bit little-endian), the value and a newline."""
    out = bytearray()
    for key, value in fields.items():
        data = value.encode()
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


def _send(fields: dict[str, str]) -> bool:
    """Send one record to journald; False if it did not take it (the caller prints it)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(record(fields), JOURNAL_SOCKET)
    except OSError:  # no journald, or a record too large for one datagram
        return False
    return True


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
