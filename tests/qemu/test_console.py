"""Reading the serial console as a stream: matches, timeouts with the tail, dead guests."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from qemu.console import BOOT_FAILURE, ConsoleLog, ConsoleTimeout, GuestDied
from qemu.ready import PATTERN, Ready

READY = "BERTH-READY version=1.2.0 slot=b roothash=" + "ab" * 32 + " uptime_s=12.34"


def test_each_wait_sees_only_output_after_the_previous_match(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(b"\x1b[0;32m  OK  \x1b[0m boot 1\r\n" + READY.encode() + b"\r\nrebooting\r\n")
    console = ConsoleLog(log)
    first = Ready.from_match(console.wait_for(PATTERN, timeout=1))
    assert first == Ready(version="1.2.0", slot="b", roothash="ab" * 32, uptime_s=12.34)
    with pytest.raises(ConsoleTimeout):
        console.wait_for(PATTERN, timeout=0.3)  # the first boot's line does not count twice
    with log.open("ab") as out:
        out.write(READY.replace("slot=b", "slot=a").encode() + b"\r\n")
    assert console.wait_for(PATTERN, timeout=1)["slot"] == "a"


def test_after_a_reset_waits_see_only_the_next_boot(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(b"boot 1\r\n" + READY.encode() + b"\r\n")  # never waited for
    console = ConsoleLog(log)
    console.skip_past_output()
    with pytest.raises(ConsoleTimeout):
        console.wait_for(PATTERN, timeout=0.3)
    with log.open("ab") as out:
        out.write(READY.replace("1.2.0", "1.3.0").encode() + b"\r\n")
    assert console.wait_for(PATTERN, timeout=1)["version"] == "1.3.0"
    assert "boot 1" in console.text  # the whole log is still there to read


def test_output_written_while_waiting_and_split_mid_character(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(b"")
    text = "Debian GNU/Linux 13 berth ttyS0 \u2014 berth login: ".encode()

    def write_slowly() -> None:
        with log.open("ab") as out:
            for i in range(0, len(text), 5):  # cuts the UTF-8 em dash in two
                out.write(text[i : i + 5])
                out.flush()
                time.sleep(0.02)

    writer = threading.Thread(target=write_slowly)
    writer.start()
    match = ConsoleLog(log).wait_for(r"ttyS0 \u2014 (\S+) login:", timeout=5)
    writer.join()
    assert match.group(1) == "berth"


def test_timeout_carries_the_tail_and_is_bounded(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)) + "[ TIME ] Timed out waiting for device\n")
    started = time.monotonic()
    with pytest.raises(ConsoleTimeout) as caught:
        ConsoleLog(log).wait_for("BERTH-READY", timeout=0.5)
    assert time.monotonic() - started < 3
    message = str(caught.value)
    assert "Timed out waiting for device" in message and "line 99" in message
    assert "line 10\n" not in message  # a tail, not the whole log


def test_a_dead_guest_stops_the_wait_with_its_reason(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_text("Kernel panic - not syncing: VFS: Unable to mount root fs\n")
    with pytest.raises(GuestDied, match="QEMU exited with status 1") as caught:
        ConsoleLog(log).wait_for("BERTH-READY", timeout=30, alive=lambda: "QEMU exited with status 1")
    assert "Kernel panic" in str(caught.value)


def test_last_words_of_a_dying_guest_still_match(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_text(READY + "\n")
    assert ConsoleLog(log).wait_for(PATTERN, timeout=1, alive=lambda: "QEMU exited with status 0")


def test_an_emergency_shell_fails_the_wait_at_once(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_text(
        "[ TIME ] Timed out waiting for device dev-mapper-root.device\n"
        "You are in emergency mode. After logging in, type \"journalctl -xb\"\n"
    )
    started = time.monotonic()
    with pytest.raises(GuestDied, match="emergency mode") as caught:
        ConsoleLog(log).wait_for(PATTERN, timeout=60, fail_on=BOOT_FAILURE)
    assert time.monotonic() - started < 5
    assert "dev-mapper-root.device" in str(caught.value)


def test_escape_sequences_are_stripped(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(b"\x1b[!p\x1b]104\x07\x1bM\x1b[K[**    ] Job running\r\n\x1b[0;32m  OK  \x1b[0m done\r\n")
    assert ConsoleLog(log).text == "[**    ] Job running\n  OK   done\n"


def test_a_kernel_panic_is_not_final_the_next_boot_may_be_ready(tmp_path: Path) -> None:
    # The image reboots on panic; boot counting may then fall back to a good entry.
    log = tmp_path / "serial.log"
    log.write_text("Kernel panic - not syncing: Attempted to kill init!\nRebooting in 5 seconds..\n" + READY + "\n")
    assert ConsoleLog(log).wait_for(PATTERN, timeout=1, fail_on=BOOT_FAILURE)
