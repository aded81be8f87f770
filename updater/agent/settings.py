"""The agent's settings: one table, parsed into a frozen dataclass.

Sources, later ones winning: the defaults below, /etc/berth/agent.yaml (shipped
in the image), <state_dir>/agent.yaml (set on the host, survives updates), and
systemd credentials named ``berth.<setting>`` (e.g. passed through SMBIOS and
imported by the unit's ImportCredential=berth.*).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from cli.errors import UserError
from updater.agent.swarmlabels import label_problem
from updater.settingrow import Naming, Setting, between, read, typed
from updater.window import Window

CREDENTIAL_PREFIX = "berth."
SWARM_ROLES = ("", "manager", "worker")


def _window(value: str) -> str | None:
    """Empty (no window) or a daily window the agent's grammar reads."""
    if not value:
        return None
    try:
        Window.parse(value)
    except ValueError as error:
        return str(error)
    return None


# name, type, default, help (updater.settingrow) — the one place a setting is declared.
SETTINGS: tuple[Setting, ...] = (
    Setting("server_url", str, "", "fleet server base URL; empty: standalone, no reboot locks"),
    Setting("repo_url", str, "", "TUF repository base URL (metadata/, targets/); default <server_url>/repo"),
    Setting("group", str, "default", "rollout group this host belongs to"),
    Setting("fleet_token", str, "", "bearer token the fleet server asks of this group; empty: none"),
    Setting("server_ca", str, "", "PEM CA file the fleet server's TLS certificate must chain to (the credential berth.server_ca holds the PEM itself); empty: the system's CAs"),
    Setting("node_id", str, "", "fleet identity; default: /etc/machine-id, kept in <state_dir>/node-id"),
    Setting("poll_interval_s", int, 300, "seconds between update checks (Zincati's default)"),
    Setting("trusted_root", str, "/etc/berth/tuf-root.json", "initial TUF root.json if the credential berth.tuf_root is absent"),
    Setting("state_dir", str, "/var/lib/berth", "state, TUF metadata cache and host overrides"),
    Setting("esp", str, "", "ESP mount point; default: the first of /efi, /boot, /boot/efi holding EFI/Linux"),
    Setting("disk", str, "", "disk holding the slots; default: the disk of the booted root partition"),
    Setting("auto_reboot", bool, True, "reboot by itself once an update is staged"),
    Setting("maintenance_window", typed(str, _window), "", "standalone only: daily UTC window for reboots, e.g. 02:00-04:00"),
    Setting("boot_tries", typed(int, between(1, 9, "must be 1 to 9, got {value}")), 3, "boots systemd-boot gives a new version before it falls back (1-9)"),
    Setting("bless_timeout_s", int, 900, "a new boot not blessed after this long is rebooted (spends a try)"),
    Setting("reboot_command", str, "systemctl reboot", "command that reboots the host"),
    Setting("lock_retry_s", int, 60, "seconds between reboot-lock attempts when the fleet is busy"),
    Setting("unexplained_retries", typed(int, between(0, 9, "must be 0 to 9, got {value}")), 2, "tries again of a version after fallbacks no failed check or panic explains (0-9)"),
    Setting("pstore_dir", str, "/var/lib/systemd/pstore", "where systemd-pstore keeps the records of kernel panics"),
    Setting("hook_timeout_s", typed(int, between(1, 86400, "must be 1 to 86400 seconds, got {value}")), 900, "seconds the pre-reboot (or post-bless) hooks may take together, the swarm drain's wait included; past it the reboot waits"),
    Setting("swarm_drain", bool, False, "drain this Docker Swarm node before each reboot and make it active after the bless (a swarm manager)"),
    Setting("swarm_role", typed(str, lambda role: None if role in SWARM_ROLES else
                                f"must be manager, worker or empty, got {role!r}"), "", "this host's Docker Swarm role: the agent makes it one (init or join, updater/agent/swarmjoin.py) and tells the fleet server, for the managers' quorum; empty: not in a swarm"),
    Setting("swarm_labels", typed(dict, label_problem), {}, "this host's swarm node labels (besides berth.group, which the agent sets), set by a manager host on itself"),
    Setting("swarm_advertise_addr", str, "", "the address (or interface) the swarm reaches this node at (docker swarm init/join --advertise-addr); empty: docker's choice"),
)


@dataclass(frozen=True)
class AgentSettings:
    server_url: str
    repo_url: str
    group: str
    fleet_token: str
    server_ca: str
    node_id: str
    poll_interval_s: int
    trusted_root: str
    state_dir: str
    esp: str
    disk: str
    auto_reboot: bool
    maintenance_window: str
    boot_tries: int
    bless_timeout_s: int
    reboot_command: str
    lock_retry_s: int
    unexplained_retries: int
    pstore_dir: str
    hook_timeout_s: int
    swarm_drain: bool
    swarm_role: str
    swarm_labels: dict[str, str]
    swarm_advertise_addr: str

    @property
    def tls_verify(self) -> str | bool:
        """What requests verifies the fleet server's certificate against (never False)."""
        return self.server_ca or True

    @property
    def effective_repo_url(self) -> str:
        if self.repo_url:
            return self.repo_url.rstrip("/")
        return f"{self.server_url.rstrip('/')}/repo" if self.server_url else ""


assert [f.name for f in fields(AgentSettings)] == [row[0] for row in SETTINGS]
_BY_NAME = {s.name: s for s in SETTINGS}
_NAMING = Naming(
    unknown=lambda where, key: f"{where}: unknown setting '{key}'",
    wrong_type=lambda where, key, error: f"{where}: setting '{key}' must be {error.kind_name}, got {error.value!r}",
    refused=lambda where, key, why: f"{where}: setting '{key}': {why}",
)


def _from_text(kind: type | None, value: Any) -> Any:
    """A credential (or a quoted YAML value) is text: read it as the row's type when it is one."""
    if not isinstance(value, str):
        return value
    if kind is bool:
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
    elif kind is int:
        try:
            return int(value.strip())
        except ValueError:
            pass
    elif kind is str:
        return value.strip()
    return value


def _coerce(name: str, value: Any, source: str) -> Any:
    row = _BY_NAME.get(name)
    return read(_BY_NAME, name, _from_text(row.type if row else None, value), source, _NAMING, UserError)


def _yaml_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    # Here only: the service reads its settings in a child (service.read_settings_apart)
    # and so never keeps the YAML parser resident.
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise UserError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: must be a mapping of setting: value")
    return {str(k): _coerce(str(k), v, str(path)) for k, v in data.items()}


def credentials(credentials_dir: Path | None) -> dict[str, str]:
    """The berth.* credentials systemd handed this service, by name without the prefix."""
    if credentials_dir is None or not credentials_dir.is_dir():
        return {}
    return {
        p.name[len(CREDENTIAL_PREFIX):]: p.read_text()
        for p in sorted(credentials_dir.iterdir())
        if p.name.startswith(CREDENTIAL_PREFIX)
    }


# Credentials that carry data rather than a setting (user_data: a whole host
# declaration, read by `berth provision`).
DATA_CREDENTIALS = {"tuf_root", "server_ca", "user_data"}


def load_settings(config_file: Path, credentials_dir: Path | None) -> AgentSettings:
    values: dict[str, Any] = {name: default for name, _, default, _ in SETTINGS}
    values.update(_yaml_file(config_file))
    creds = {k: v for k, v in credentials(credentials_dir).items() if k not in DATA_CREDENTIALS}
    cred_values = {k: _coerce(k, v, f"credential {CREDENTIAL_PREFIX}{k}") for k, v in creds.items()}
    # The host override lives in the state dir, which itself may come from a credential.
    state_dir = cred_values.get("state_dir", values["state_dir"])
    values.update(_yaml_file(Path(state_dir) / "agent.yaml"))
    values.update(cred_values)
    if credentials_dir is not None and (credentials_dir / f"{CREDENTIAL_PREFIX}server_ca").is_file():
        # The credential is a file already (systemd keeps it while the service runs).
        values["server_ca"] = str(credentials_dir / f"{CREDENTIAL_PREFIX}server_ca")
    return AgentSettings(**values)


def check_settings(data: dict[str, Any], source: str) -> dict[str, Any]:
    """Some settings as a host declaration gives them, checked as a settings file is:
    unknown names, wrong types and out-of-range values are refused, named."""
    return {str(k): _coerce(str(k), v, source) for k, v in data.items()}


def credentials_dir_from_env() -> Path | None:
    value = os.environ.get("CREDENTIALS_DIRECTORY")
    return Path(value) if value else None
