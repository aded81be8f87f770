"""A lab for end-to-end scenarios: releases, a real fleet server, hosts in QEMU.

    lab = Lab(workdir, narrate=print)
    lab.publish(build_release(out, "1.0.0"))       # `berth build`, `berth publish`
    with lab.serve(groups={"lab": {...}}):         # `berth serve` over HTTPS on 127.0.0.1
        host = lab.boot("h1", artifact, group="lab")
        host.wait_ready()                          # BERTH-READY on its console
        lab.wait_report(host, "blessed", "1.1.0")  # the server's records

The lab knows the agent only from outside, like an operator: each host's
serial console, SSH, and what the fleet server recorded. Every step it takes
is told to ``narrate`` (the demo prints it, tests log it).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import requests

from qemu import hang
from qemu.harness import VM, free_port
from qemu.lan import LanPort, VdeSwitch
from qemu.machine import HOST_SERVICES_ADDRESS, Forward
from qemu.ready import Ready
from updater import contract

# The guest finds the fleet server at https://HOST_SERVICES_ADDRESS:FLEET_GUEST_PORT; its
# certificate, from a CA the lab makes per run, names that address and 127.0.0.1.
FLEET_GUEST_PORT = 8080
# A site's workload: a container restarted by the engine, its data in a volume on /var.
APP = "berth-e2e-app"
APP_DATA = "/var/lib/berth-e2e-app"
ADMIN_TOKEN = "berth-lab-admin"
# The site's own health checks on /var (berth-check-user.service runs them on every boot).
SITE_CHECKS = "/var/lib/berth/health.d"
AGENT_POLL_S = 5  # how often the lab's agents ask the fleet server
# The scenarios' releases. Versions only grow, so one host can take them in order.
V1, V2, V3 = "1.0.0", "1.1.0", "1.2.0"
BAD_CHECK, BAD_PANIC = "1.3.0", "1.4.0"
FAULTS = {BAD_CHECK: "health-check", BAD_PANIC: "kernel-panic"}
REPO_ROOT = Path(__file__).resolve().parent.parent
Narrate = Callable[[str], None]


def berth(args: list[str], log: Path) -> str:
    """Run a `berth` verb as a user would; its full output goes to ``log``; return stdout."""
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    with log.open("a") as out:
        out.write(f"$ berth {' '.join(args)}\n{result.stdout}{result.stderr}\n")
    if result.returncode != 0:
        raise RuntimeError(f"berth {args[0]} failed (exit {result.returncode}): "
                           f"{result.stderr.strip()[-500:]}; log: {log}")
    return result.stdout


def build_release(output: Path, version: str, *, fault: str = "none", show: bool = False) -> Path:
    """`berth build` one release into ``output`` (mkosi's caches keep a rebuild to minutes)."""
    from builder import settings
    from builder.build import build
    from builder.cli import DEFAULT_CONFIG

    chosen = settings.override(settings.load(DEFAULT_CONFIG), version=version, fault=fault)
    return build(chosen, output, show=show)


def lab_group(**overrides: Any) -> dict[str, Any]:
    """A rollout group for the lab: everyone at once, halt on the first rollback."""
    return {
        "channel": "stable",
        "waves": [{"after": "0s", "percent": 100}],
        "max_concurrent_reboots": 1,
        "rate": {"max_updates": 10, "period": "1h"},
        "halt": {"max_failure_share": 0.0, "min_updates": 1},
        "lock_ttl": "1h",
        **overrides,
    }


@dataclass(frozen=True)
class Enrolment:
    host_services: dict[int, int]  # guest port -> this machine's port
    credentials: dict[str, str | bytes]


@dataclass
class Host:
    """One booted VM of the lab, with the identity the fleet server knows it by."""

    name: str
    vm: VM
    group: str
    narrate: Narrate

    @property
    def node_id(self) -> str:
        # The image derives /etc/machine-id from the SMBIOS UUID; the agent uses it.
        return self.vm.machine.system_uuid.hex

    @property
    def lan_address(self) -> str | None:
        """Its address on the lab's private LAN (None: it has no NIC there)."""
        lan = self.vm.machine.lan
        return lan.address if lan is not None else None

    def forwarded(self, guest_port: int) -> int:
        """The 127.0.0.1 port of this machine that reaches ``guest_port`` of the guest."""
        return next(f.host_port for f in self.vm.machine.forwards if f.guest_port == guest_port)

    @property
    def console_log(self) -> Path:
        return self.vm.state.serial_log

    def wait_ready(self, timeout: float | None = None) -> Ready:
        ready = self.vm.wait_ready(timeout)
        self.narrate(f"{self.name}: up and blessed on {ready.version} from slot {ready.slot.upper()} "
                     f"(boot-complete after {ready.uptime_s:.0f} s)")
        return ready

    def agent_status(self) -> dict[str, Any]:
        """`berth agent status --json` in the guest over SSH."""
        self.vm.wait_ssh()
        return dict(json.loads(self.vm.run("berth agent status --json").stdout))

    def run(self, command: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.vm.wait_ssh()
        return self.vm.run(command, **kwargs)

    def agent_activity(self) -> str:
        """What the agent tells systemd it is doing (its sd_notify STATUS=)."""
        return self.run("systemctl show -P StatusText berth-agent", check=False).stdout.strip()

    def power_cut(self, when: str) -> None:
        self.narrate(f"{self.name}: power cut ({when})")
        self.vm.hard_reset()

    def hang_on_first_boot_of(self, roothash: str) -> None:
        """Make the next boot of ``roothash`` hang before it can be blessed (PID 1 starved on
        every CPU by a site health check, qemu/hang.py), once: only its watchdog ends it."""
        check = f"{SITE_CHECKS}/00-hang-once"
        self.run(f"mkdir -p {SITE_CHECKS} && cat > {check} && chmod +x {check} && sync",
                 input=hang.health_check_hanging_once(roothash).encode())
        self.narrate(f"{self.name}: the next boot of {roothash[:12]} will hang (PID 1 starved)")

    def start_app(self, archive: Path) -> None:
        """Load a container image from ``archive`` and run APP with restart=always;
        it appends a line to APP_DATA/starts each time it starts."""
        tag = self.load_image(archive)
        self.run(f"mkdir -p {APP_DATA} && docker run -d --name {APP} --restart=always "
                 f"-v {APP_DATA}:/data {tag} sh -c 'echo started >> /data/starts; exec sleep 1000000'")
        self.narrate(f"{self.name}: container {APP} runs (restart=always, volume {APP_DATA})")

    def load_image(self, archive: Path) -> str:
        """``docker load`` a container image archive (the guest reaches no registry); its tag."""
        self.vm.wait_ssh()
        self.vm.ssh.copy_in(archive, "/var/tmp/app.tar")
        return self.run("docker load -q -i /var/tmp/app.tar").stdout.split("Loaded image:")[-1].strip()

    def app_running(self) -> bool:
        state = self.run(f"docker inspect -f '{{{{.State.Running}}}}' {APP}", check=False)
        return state.stdout.strip() == "true"

    def app_starts(self) -> int:
        return len(self.run(f"cat {APP_DATA}/starts").stdout.splitlines())

    def boots_of(self, roothash: str) -> int:
        """How many times this VM's kernel started with ``roothash`` (from its console)."""
        return sum(1 for line in self.vm.console.text.splitlines()
                   if "Command line:" in line and f"roothash={roothash}" in line)


class Lab:
    def __init__(self, workdir: Path, narrate: Narrate = lambda _: None) -> None:
        self.workdir = workdir
        self.narrate = narrate
        self.repo = workdir / "repository"
        self.keys = workdir / "keys"
        self.log = workdir / "lab.log"
        self.hosts: list[Host] = []
        self._told: dict[tuple[str, str], int] = {}  # reports narrated per (node, version)
        self.server_url = ""
        self.server_ca: Path | None = None  # the run's CA, which hosts verify the server against
        self.switch: VdeSwitch | None = None  # the private LAN, started by the first host on it
        self._lan_dir: tempfile.TemporaryDirectory[str] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    # ---- releases ------------------------------------------------------------------------

    def publish(self, artifact: Path, delta: bool = True) -> None:
        """Sign ``artifact`` into the lab's repository; ``delta``: with its block indexes (as
        `berth publish` does by default), so hosts build it from their booted slot. Under TCG
        that now costs a host less than the full download (67 s against 81 s from
        `downloading` to `staged`); a test about the full stream turns it off."""
        if not self.keys.exists():
            berth(["keys", "init", "--keys", str(self.keys)], self.log)
        manifest = contract.Manifest.from_json((artifact / contract.MANIFEST).read_text())
        how = "signed TUF targets" + (", block indexes for deltas" if delta else "")
        self.narrate(f"publishing {manifest.image_id} {manifest.version} ({how})")
        # zstd -3: the default -19 would cost minutes of this machine's CPU per release.
        berth(["publish", str(artifact), "--repo", str(self.repo), "--keys", str(self.keys),
               "--zstd-level", "3", *(() if delta else ("--no-delta",))], self.log)

    @property
    def tuf_root(self) -> bytes:
        return (self.repo / "metadata" / "root.json").read_bytes()

    # ---- the fleet server ----------------------------------------------------------------

    @contextlib.contextmanager
    def serve(self, groups: dict[str, dict[str, Any]], poll_interval: str = "5s") -> Iterator[str]:
        """`berth serve` over HTTPS on a free 127.0.0.1 port with the lab's repository and SQLite."""
        from updater.fleet.ca import make_server_tls
        from updater.fleet.launch import running_server, write_config

        config = write_config(self.workdir, {
            "repository": str(self.repo),
            "admin_token": ADMIN_TOKEN,
            "poll_interval": poll_interval,
            "channels": {"stable": {"image_id": "berth", "pin": None}},
            "groups": groups,
        })
        tls = make_server_tls(self.workdir / "tls", addresses=("127.0.0.1", HOST_SERVICES_ADDRESS))
        self.server_ca = tls.ca
        with running_server(config, f"sqlite:///{self.workdir / 'fleet.sqlite3'}", tls=tls) as server:
            self.server_url = server.url
            self.narrate(f"fleet server up at {server.url} (log: {server.log})")
            try:
                yield server.url
            finally:
                self.server_url = ""

    def admin(self, path: str) -> Any:
        response = requests.get(f"{self.server_url}{path}", verify=str(self.server_ca),
                                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10)
        response.raise_for_status()
        return response.json()

    def locks_given_back(self, group: str, timeout: float = 300) -> list[str]:
        """Wait until no one holds a reboot lock of ``group``; the holders left at ``timeout``.
        An agent gives its lock back on the step after its blessed (or rolled back) report,
        so a test that read the server right after that report could still see it held."""
        deadline = time.monotonic() + timeout
        while (held := self.admin("/admin/status")["groups"][group]["locks_held"]) and time.monotonic() < deadline:
            time.sleep(1)
        return list(held)

    def reboot_lock(self, group: str, holder: str, take: bool) -> None:
        """Take (or give back) one of ``group``'s reboot slots as ``holder``, as an
        operator keeping hosts from rebooting would, over FleetLock."""
        from updater.wire import (
            FLEETLOCK_HEADER,
            PRE_REBOOT_PATH,
            STEADY_STATE_PATH,
            FleetLockRequest,
        )

        response = requests.post(
            f"{self.server_url}{PRE_REBOOT_PATH if take else STEADY_STATE_PATH}",
            json=FleetLockRequest(holder, group).to_json(), headers={FLEETLOCK_HEADER: "true"}, timeout=10,
            verify=str(self.server_ca),
        )
        response.raise_for_status()
        self.narrate(f"{holder} {'holds' if take else 'gave back'} a reboot lock of group {group}")

    def reports(self, host: Host) -> list[dict[str, Any]]:
        return list(self.admin(f"/admin/hosts/{host.node_id}")["reports"])

    def follow(self, host: Host, version: str, until: tuple[str, ...], timeout: float = 1800) -> list[dict[str, Any]]:
        """Wait until the server recorded a report from ``host`` about ``version`` whose
        event is in ``until``, narrating each report once; return them all (with the
        server's times)."""
        deadline = time.monotonic() + timeout
        key = (host.node_id, version)
        while True:
            reports = [r for r in self.reports(host) if r["version"] == version]
            for report in reports[self._told.get(key, 0):]:
                detail = f": {report['detail']}" if report["detail"] else ""
                self.narrate(f"{host.name}: {report['event']} {version}{detail}")
            self._told[key] = len(reports)
            if any(r["event"] in until for r in reports):
                return reports
            reason = host.vm.stopped_reason()
            if reason is not None or time.monotonic() > deadline:
                raise TimeoutError(
                    f"{host.name}: no {'/'.join(until)} report for {version} "
                    f"({reason or f'within {timeout:.0f} s'}); got {[r['event'] for r in reports]}; "
                    f"console: {host.console_log}"
                )
            time.sleep(1)

    # ---- hosts ---------------------------------------------------------------------------

    def boot(
        self, name: str, artifact: Path, *, group: str, bless_timeout_s: int = 600,
        boot_tries: int | None = None, memory_mb: int = 1536, cpus: int = 2,
        lan: int | None = None, forwards: tuple[int, ...] = (), settings: dict[str, str] | None = None,
        user_data: str | None = None, start: bool = True,
    ) -> Host:
        """Boot a host provisioned for the lab's fleet server through SMBIOS credentials
        (``boot_tries``: the agent's setting; None keeps its default; ``settings``: more
        agent settings, as credentials; ``user_data``: a host declaration, handed over as a user
        would, in the credential berth.user_data that `berth provision` reads). ``lan``: a NIC on the lab's private LAN, port
        ``lan`` of its switch (qemu/lan.py); ``forwards``: guest TCP ports reached from a
        free 127.0.0.1 port here (``Host.forwarded``). ``start``: False leaves starting its VM
        to the caller (bench/boot.py times a boot from QEMU's start)."""
        enrolment = self.enrolment(group, bless_timeout_s=bless_timeout_s, boot_tries=boot_tries, settings=settings)
        vm = VM(
            artifact, self.workdir / name, memory_mb=memory_mb, cpus=cpus,
            host_services=enrolment.host_services,
            lan=self._lan_port(lan) if lan is not None else None,
            forwards=tuple(Forward(free_port(), guest) for guest in forwards),
            credentials={**enrolment.credentials, **({"berth.user_data": user_data} if user_data is not None else {})},
        )
        host = Host(name, vm, group, self.narrate)
        if start:
            vm.start()
        self.hosts.append(host)
        self.narrate(f"{name}: booting {artifact.name} in QEMU ({vm.accel.value}); "
                     f"watch its console with: tail -f {host.console_log}")
        return host

    def enrolment(
        self, group: str, *, guest_port: int = FLEET_GUEST_PORT, bless_timeout_s: int = 600,
        boot_tries: int | None = None, settings: dict[str, str] | None = None,
    ) -> Enrolment:
        """What a VM needs to be one of this lab's fleet hosts: the fleet server reached at
        ``guest_port`` of the guest's host-services address, and the agent's settings as
        SMBIOS credentials (``boot_tries``: None keeps the agent's default; ``settings``: more
        agent settings). `Lab.boot` uses it; a VM made elsewhere (tests/qemu) may too."""
        if not self.server_url or self.server_ca is None:
            raise RuntimeError("start the fleet server (Lab.serve) before booting hosts")
        port = int(self.server_url.rsplit(":", 1)[1])
        return Enrolment({guest_port: port}, {
            "berth.server_url": f"https://{HOST_SERVICES_ADDRESS}:{guest_port}",
            "berth.server_ca": self.server_ca.read_bytes(),
            "berth.tuf_root": self.tuf_root,
            "berth.group": group,
            "berth.poll_interval_s": str(AGENT_POLL_S),
            "berth.lock_retry_s": "5",
            "berth.bless_timeout_s": str(bless_timeout_s),
            **({"berth.boot_tries": str(boot_tries)} if boot_tries is not None else {}),
            **{f"berth.{key}": value for key, value in (settings or {}).items()},
        })

    def _lan_port(self, index: int) -> LanPort:
        if self.switch is None:
            # A short path: the switch's sockets must fit a socket address (108 bytes).
            self._lan_dir = tempfile.TemporaryDirectory(prefix="berth-lan-")
            self.switch = VdeSwitch(Path(self._lan_dir.name) / "switch").start()
            self.narrate(f"private LAN: a VDE switch at {self.switch.directory}")
        return self.switch.port(index)

    def close(self) -> None:
        for host in self.hosts:
            host.vm.close()
        self.hosts.clear()
        if self.switch is not None:
            self.switch.stop()
            self.switch = None
        if self._lan_dir is not None:
            self._lan_dir.cleanup()
            self._lan_dir = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
