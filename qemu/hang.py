"""A real hang in a guest, for the watchdog to end: PID 1 starved of every CPU.

Not a simulated reset: the kernel's guards for ordinary tasks are turned off and a
SCHED_FIFO busy loop is pinned on each CPU, so no ordinary task (PID 1, the agent,
sshd) runs again. PID 1 stops pinging the hardware watchdog, and only the watchdog
device (QEMU's i6300esb, counting in QEMU's clock, outside the guest) can reset the
machine. The guest says when it starts on its console (``MARKER``), so the harness
can time the hang to the reset.
"""

from __future__ import annotations

MARKER = "berth-test: starving PID 1 on every CPU"

# sh, run as root in the guest. Both of the kernel's guards against runaway real-time
# tasks go first: RT throttling, and (Linux 6.12) the fair server, which still gave
# ordinary tasks 5 % of each CPU; with it, PID 1 kept pinging through 8 min of such
# loops. Then the script pins itself to the last CPU, so every loop it starts on
# another CPU leaves it running until it becomes the last loop itself.
STARVE = f"""\
echo -1 > /proc/sys/kernel/sched_rt_runtime_us
[ -d /sys/kernel/debug/sched ] || mount -t debugfs debugfs /sys/kernel/debug
for server in /sys/kernel/debug/sched/fair_server/cpu*/runtime; do
    [ -e "$server" ] && echo 0 > "$server"
done
last=$(($(nproc) - 1))
taskset -pc "$last" $$ > /dev/null
echo "{MARKER}" > /dev/kmsg
for cpu in $(seq 0 $((last - 1))); do
    taskset -c "$cpu" chrt -f 99 sh -c 'while :; do :; done' &
done
exec taskset -c "$last" chrt -f 99 sh -c 'while :; do :; done'
"""


def health_check_hanging_once(roothash: str) -> str:
    """A site health check (an executable for health.d) that hangs the first boot of
    the root ``roothash`` to reach it, before that boot can be blessed, and only that
    one: it removes itself first, so the next boot of that root is not hung."""
    return (
        "#!/bin/sh\n"
        f'grep -q "roothash={roothash}" /proc/cmdline || exit 0\n'
        'rm -f "$0" && sync\n'
        f"{STARVE}"
    )
