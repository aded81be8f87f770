"""The guest's serial console, read from QEMU's log file as a stream.

Each ``wait_for`` looks only at output after the previous match, so a caller
can wait for the next boot's readiness line after a reboot without seeing the
last one again. On timeout the error carries the console's tail: a hung boot
explains itself in the test output.
"""

from __future__ import annotations

import codecs
import re
import time
from collections.abc import Callable
from pathlib import Path

# Terminal control sequences (colours, cursor moves) and carriage returns are
# dropped so patterns and tails read like the text a person saw.
_CONTROL = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor moves, soft reset
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC: palette and title changes
    r"|\x1b[()][A-Z0-9]"  # character set selection
    r"|\x1b[@-Z\\^_]"  # two-byte escapes (e.g. ESC M, reverse line feed)
    r"|\r"
)

# What a boot that will never become ready prints: fail at once, not at the
# timeout. A kernel panic is not on the list: the image reboots on panic
# (panic=5), and boot counting may then fall back to a good entry.
BOOT_FAILURE = re.compile(r"You are in emergency mode|Entering emergency mode")

TAIL_LINES = 40


class ConsoleTimeout(TimeoutError):
    """The awaited output did not appear in time; the message holds the console tail."""


class GuestDied(RuntimeError):
    """QEMU exited, or the guest said it cannot go on, while output was awaited."""


def tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


class ConsoleLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._text = ""
        self._offset = 0  # bytes read from the file
        self._consumed = 0  # characters of text already matched past

    def _read_new(self) -> None:
        try:
            with self.path.open("rb") as log:
                log.seek(self._offset)
                chunk = log.read()
        except FileNotFoundError:
            return
        self._offset += len(chunk)
        self._text += _CONTROL.sub("", self._decoder.decode(chunk))

    @property
    def text(self) -> str:
        """Everything the guest printed so far (cleaned)."""
        self._read_new()
        return self._text

    def skip_past_output(self) -> None:
        """Later waits see only what the guest prints from now on."""
        self._read_new()
        self._consumed = len(self._text)

    def wait_for(
        self,
        pattern: str | re.Pattern[str],
        timeout: float,
        alive: Callable[[], str | None] = lambda: None,
        fail_on: re.Pattern[str] | None = None,
        poll: float = 0.2,
    ) -> re.Match[str]:
        """Wait until ``pattern`` appears in output not yet matched past.

        ``alive`` returns None while the guest runs, or why it stopped;
        ``fail_on`` matching first means the awaited output will never come.
        """
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            stopped = alive()  # before reading, so a dying guest's last words are seen
            self._read_new()
            match = regex.search(self._text, self._consumed)
            if match:
                self._consumed = match.end()
                return match
            failed = fail_on.search(self._text, self._consumed) if fail_on else None
            if failed:
                stopped = f"the guest printed {failed.group(0)!r}"
            if stopped is not None:
                raise GuestDied(
                    f"{stopped} while waiting for /{regex.pattern}/; console tail:\n"
                    f"{tail(self._text)}"
                )
            if time.monotonic() >= deadline:
                raise ConsoleTimeout(
                    f"no /{regex.pattern}/ on the console within {timeout:.0f} s "
                    f"(log: {self.path}); console tail:\n{tail(self._text)}"
                )
            time.sleep(poll)
