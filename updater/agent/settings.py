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

import yaml

from cli.errors import UserError
from updater.settingrow import Setting
from updater.window import Window

CREDENTIAL_PREFIX = "berth."

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
    Setting("maintenance_window", str, "", "standalone only: daily UTC window for reboots, e.g. 02:00-04:00"),
    Setting("boot_tries", int, 3, "boots systemd-boot gives a new version before it falls back (1-9)"),
    Setting("bless_timeout_s", int, 900, "a new boot not blessed after this long is rebooted (spends a try)"),
    Setting("reboot_command", str, "systemctl reboot", "command that reboots the host"),
    Setting("lock_retry_s", int, 60, "seconds between reboot-lock attempts when the fleet is busy"),
    Setting("unexplained_retries", int, 2, "tries again of a version after fallbacks no failed check or panic explains (0-9)"),
    Setting("pstore_dir", str, "/var/lib/systemd/pstore", "where systemd-pstore keeps the records of kernel panics"),
    Setting("hook_timeout_s", int, 900, "seconds the pre-reboot (or post-bless) hooks may take together, the swarm drain's wait included; past it the reboot waits"),
    Setting("swarm_drain", bool, False, "drain this Docker Swarm node before each reboot and make it active after the bless (a swarm manager)"),
    Setting("swarm_role", str, "", "this host's Docker Swarm role, told to the fleet server for the managers' quorum: manager, worker or empty"),
)

SWARM_ROLES = ("", "manager", "worker")


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
# Every agent setting's kind is a type (a file, a credential or a declaration gives it).
_TYPES: dict[str, type] = {s.name: s.kind for s in SETTINGS if isinstance(s.kind, type)}
assert len(_TYPES) == len(SETTINGS)


def _coerce(name: str, value: Any, source: str) -> Any:
    kind = _TYPES.get(name)
    if kind is None:
        raise UserError(f"{source}: unknown setting '{name}'")
    if kind is bool and isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
    elif kind is int and isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    elif kind is str and isinstance(value, str):
        return value.strip()
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    raise UserError(f"{source}: setting '{name}' must be {kind.__name__}, got {value!r}")


def _yaml_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
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
    _check_values(values)
    return AgentSettings(**values)


def _check_values(values: dict[str, Any]) -> None:
    """The rules a setting's type alone does not say."""
    if "boot_tries" in values and not 1 <= values["boot_tries"] <= 9:
        raise UserError(f"setting 'boot_tries': must be 1 to 9, got {values['boot_tries']}")
    if "unexplained_retries" in values and not 0 <= values["unexplained_retries"] <= 9:
        raise UserError(f"setting 'unexplained_retries': must be 0 to 9, got {values['unexplained_retries']}")
    if "hook_timeout_s" in values and not 1 <= values["hook_timeout_s"] <= 86400:
        raise UserError(f"setting 'hook_timeout_s': must be 1 to 86400 seconds, got {values['hook_timeout_s']}")
    if values.get("swarm_role", "") not in SWARM_ROLES:
        raise UserError(f"setting 'swarm_role': must be manager, worker or empty, got {values['swarm_role']!r}")
    if values.get("maintenance_window"):
        try:
            Window.parse(values["maintenance_window"])
        except ValueError as error:
            raise UserError(f"setting 'maintenance_window': {error}") from None


def check_settings(data: dict[str, Any], source: str) -> dict[str, Any]:
    """Some settings as a host declaration gives them, checked as a settings file is:
    unknown names, wrong types and out-of-range values are refused, named."""
    values = {str(k): _coerce(str(k), v, source) for k, v in data.items()}
    _check_values(values)
    return values


def credentials_dir_from_env() -> Path | None:
    value = os.environ.get("CREDENTIALS_DIRECTORY")
    return Path(value) if value else None
