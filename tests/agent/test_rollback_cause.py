"""A rollback says why: a failed health check or a kernel panic makes the version bad
for good; a fallback nothing explains (power cuts, a hang, the firmware) is tried
again a bounded number of times (setting unexplained_retries) and never condemns
the version. Hosts on files (tests/agent/conftest.py), the agent as a process."""

from __future__ import annotations

import os
from typing import Any

Host = Any  # fixture from conftest.py


def _fall_back(host: Host, tries: int = 3, on_each_boot: Any = lambda: None) -> None:
    for attempt in range(tries):
        assert host.boot() == "1.1", attempt
        on_each_boot()
    assert host.boot() == "1.0"  # systemd-boot skips the entry with no tries left


def test_a_kernel_panic_is_told_apart_and_condemns_the_version(host: Host) -> None:
    host.agent("run", "--once")
    _fall_back(host, on_each_boot=host.panic)
    result = host.agent("run", "--once")
    assert "rolled_back 1.1: systemd-boot fell back to 1.0: the kernel panicked (3 records kept by pstore)" in result.stderr
    assert host.state()["bad_versions"] == ["1.1"] and host.state()["unexplained_versions"] == []
    assert host.entries() == ["berth_1.0.efi"]


def test_a_panic_from_before_the_update_explains_nothing(host: Host) -> None:
    host.panic()  # an old record, moved to /var long before 1.1 was staged
    (record,) = (host.root / "var/lib/systemd/pstore").iterdir()
    os.utime(record, (1, 1))
    host.settings(unexplained_retries=0)
    host.agent("run", "--once")
    _fall_back(host)
    result = host.agent("run", "--once")
    assert "no failed check or panic recorded" in result.stderr
    assert host.state()["bad_versions"] == []


def test_power_cuts_during_every_try_do_not_condemn_the_version(host: Host) -> None:
    host.agent("run", "--once")
    assert host.rebooted() == 1
    _fall_back(host)  # every boot of 1.1 cut short: nothing recorded
    result = host.agent("run", "--once")
    assert "rebooting 1.1: systemd-boot fell back to 1.0: no failed check or panic recorded" in result.stderr
    assert "trying again (1 of 2)" in result.stderr
    # Staged again with fresh tries from the slot it was written to, and rebooted into.
    assert host.state()["state"] == "rebooting" and host.state()["bad_versions"] == []
    assert host.entries() == ["berth_1.1+3.efi", "berth_1.0.efi"]
    assert host.verified_boot() == "1.1" and host.rebooted() == 2
    assert host.boot() == "1.1"
    host.bless()
    assert "blessed 1.1" in host.agent("run", "--once").stderr
    assert host.state()["state"] == "idle" and host.entries() == ["berth_1.1.efi", "berth_1.0.efi"]


def test_unexplained_fallbacks_are_tried_again_a_bounded_number_of_times(host: Host) -> None:
    host.settings(unexplained_retries=1)
    host.agent("run", "--once")
    _fall_back(host)
    assert "trying again (1 of 1)" in host.agent("run", "--once").stderr
    _fall_back(host)
    result = host.agent("run", "--once")
    assert "rolled_back 1.1: systemd-boot fell back to 1.0: no failed check or panic recorded" in result.stderr
    state = host.state()
    assert state["state"] == "idle" and state["bad_versions"] == [] and state["unexplained_versions"] == ["1.1"]
    assert host.entries() == ["berth_1.0.efi"]
    # Held back, not condemned: status says which, and the agent does not take it by itself.
    assert "fell back for no cause seen, held back: 1.1" in host.agent("status").stdout
    assert "no update" in host.agent("run", "--once").stderr


def test_a_failed_check_after_an_unexplained_fallback_still_condemns(host: Host) -> None:
    host.agent("run", "--once")
    _fall_back(host)
    host.agent("run", "--once")  # tried again
    _fall_back(host, on_each_boot=lambda: host.fail_check("berth-check-agent.service"))
    result = host.agent("run", "--once")
    assert "health check failed: berth-check-agent.service" in result.stderr
    assert host.state()["bad_versions"] == ["1.1"]


def test_tries_spent_by_power_cuts_before_the_agent_rebooted_are_tried_again(host: Host) -> None:
    host.settings(auto_reboot=False)  # staged, waiting for a reboot that power cuts beat
    host.agent("run", "--once")
    assert host.state()["state"] == "staged" and host.rebooted() == 0
    _fall_back(host)
    host.settings(auto_reboot=True)
    result = host.agent("run", "--once")
    assert "every try spent before the agent rebooted" in result.stderr
    assert "trying again (1 of 2)" in result.stderr
    assert host.entries() == ["berth_1.1+3.efi", "berth_1.0.efi"] and host.rebooted() == 1
    assert host.state()["bad_versions"] == []
