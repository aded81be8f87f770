"""The agent's journal records on journald's native protocol, and where they go otherwise."""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from updater.agent import journal


@pytest.fixture
def journald(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
             capfd: pytest.CaptureFixture[str]) -> Iterator[socket.socket]:
    """A socket standing in for journald's, and a stderr (capfd's) that is "the journal"
    ($JOURNAL_STREAM names it)."""
    path = tmp_path / "journal.socket"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        monkeypatch.setattr(journal, "JOURNAL_SOCKET", str(path))
        st = os.fstat(2)
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        yield sock


def fields(datagram: bytes) -> dict[str, str]:
    """Parse a native-protocol datagram as journald does."""
    out, at = {}, 0
    while at < len(datagram):
        end = datagram.index(b"\n", at)
        line = datagram[at:end]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            at = end + 1
        else:
            key, (size,) = line, struct.unpack("<Q", datagram[end + 1:end + 9])
            value = datagram[end + 9:end + 9 + size]
            assert datagram[end + 9 + size:end + 10 + size] == b"\n"
            at = end + 10 + size
        out[key.decode()] = value.decode()
    return out


def test_a_record_carries_its_fields_to_journald(journald: socket.socket, capfd: pytest.CaptureFixture[str]) -> None:
    journal.log("warning", "slot b:\nnot written", state="writing", version="1.1", slot=None)
    assert fields(journald.recv(65536)) == {
        "MESSAGE": "slot b:\nnot written", "PRIORITY": "4", "SYSLOG_IDENTIFIER": "berth-agent",
        "BERTH_STATE": "writing", "BERTH_VERSION": "1.1",
    }
    assert capfd.readouterr().err == ""


def test_a_stderr_that_is_not_the_journal_gets_the_record(
        journald: socket.socket, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "0:0")  # inherited, but stderr was redirected since
    journal.log("info", "agent started", group="g")
    assert capfd.readouterr().err == "berth-agent: info: agent started group=g\n"
    journald.settimeout(0)
    with pytest.raises(BlockingIOError):
        journald.recv(65536)


def test_a_record_journald_refuses_goes_to_stderr(
        journald: socket.socket, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(journal, "JOURNAL_SOCKET", "/nonexistent/socket")
    journal.log("error", "step failed")
    assert capfd.readouterr().err == "berth-agent: error: step failed\n"
