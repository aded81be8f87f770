"""What a host can be given: one strict schema, parsed from user-data (pure: no I/O).

A declaration is either a berth document (a YAML mapping with the keys of
``DOCUMENT_KEYS``) or cloud-init ``#cloud-config`` user-data, of which berth
takes what users already write for this (``hostname``, ``ssh_authorized_keys``,
``users[0].ssh_authorized_keys``) and a ``berth:`` key holding a berth document.
Every unknown key is refused with its path named, so a typo never silently
leaves a host half-configured; the agent's settings are checked by the agent's
own table (updater/agent/settings.py).
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from cli.errors import UserError
from updater.agent.settings import check_settings

CLOUD_CONFIG_HEADER = "#cloud-config"
DOCUMENT_KEYS = ("hostname", "ssh_authorized_keys", "agent", "tuf_root", "server_ca", "containers", "hooks")
# The agent's reboot hook stages (updater/agent/hooks.py), each a directory of scripts.
HOOK_STAGES = ("pre-reboot", "post-bless")
CLOUD_CONFIG_KEYS = ("hostname", "ssh_authorized_keys", "users", "berth")
USER_KEYS = ("name", "ssh_authorized_keys")
CONTAINER_KEYS = ("name", "image", "archive", "command", "env", "ports", "volumes", "restart")
RESTART_POLICIES = ("always", "on-failure", "no")

_HOSTNAME = re.compile(r"(?=.{1,64}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*")
_KEY_TYPE = re.compile(r"(^|\s)(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp\d+|sk-[a-z0-9@.-]+)\s+[A-Za-z0-9+/=]+")
_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PORT = re.compile(r"(\d{1,5}):(\d{1,5})(/(tcp|udp))?")
_ARCHIVE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# A host with no config volume (a cloud's metadata service gave the declaration)
# fetches its archive from a URL; the sha256 pins what it may load.
_ARCHIVE_URL = re.compile(r"https?://[^\s#]+#sha256=([0-9a-f]{64})")


@dataclass(frozen=True)
class Port:
    host: int
    container: int
    protocol: str = "tcp"

    def __str__(self) -> str:
        return f"{self.host}:{self.container}/{self.protocol}"


@dataclass(frozen=True)
class Volume:
    host: str  # under /var: the only writable place on a berth host
    container: str
    read_only: bool = False

    def __str__(self) -> str:
        return f"{self.host}:{self.container}" + (":ro" if self.read_only else "")


@dataclass(frozen=True)
class Container:
    name: str
    image: str  # a registry reference, or the tag the archive holds
    # a docker-archive tar, loaded before each start: a file at the top of the config
    # volume, or an http(s) URL ending in #sha256=HEX
    archive: str = ""
    command: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    ports: tuple[Port, ...] = ()
    volumes: tuple[Volume, ...] = ()
    restart: str = "always"

    @property
    def archive_sha256(self) -> str:
        """The pinned digest of a URL archive; "" for one on the config volume."""
        match = _ARCHIVE_URL.fullmatch(self.archive)
        return match[1] if match else ""

    @property
    def archive_file(self) -> str:
        """The archive's name where the host keeps it (a URL's is its digest)."""
        return f"sha256-{self.archive_sha256}.tar" if self.archive_sha256 else self.archive


@dataclass(frozen=True)
class Hook:
    """One reboot hook: written to /var/lib/berth/hooks/<stage>/<name>, executable."""

    stage: str
    name: str
    script: str


@dataclass(frozen=True)
class HostConfig:
    hostname: str = ""
    ssh_authorized_keys: tuple[str, ...] = ()
    agent: dict[str, Any] = field(default_factory=dict)
    tuf_root: str = ""  # root.json text
    server_ca: str = ""  # PEM the fleet server's certificate must chain to
    containers: tuple[Container, ...] = ()
    hooks: tuple[Hook, ...] = ()

    def document(self) -> dict[str, Any]:
        """The berth document that parses back to this declaration (kept on /var); "hooks"
        only when some are declared, so that a declaration without is what it was before."""
        hooks: dict[str, dict[str, str]] = {}
        for hook in self.hooks:
            hooks.setdefault(hook.stage, {})[hook.name] = hook.script
        return ({"hooks": hooks} if hooks else {}) | {
            "hostname": self.hostname,
            "ssh_authorized_keys": list(self.ssh_authorized_keys),
            "agent": dict(self.agent),
            "tuf_root": self.tuf_root,
            "server_ca": self.server_ca,
            "containers": [
                {"name": c.name, "image": c.image, "archive": c.archive, "command": list(c.command),
                 "env": dict(c.env), "ports": [str(p) for p in c.ports],
                 "volumes": [str(v) for v in c.volumes], "restart": c.restart}
                for c in self.containers
            ],
        }


@dataclass(frozen=True)
class MetaData:
    """What a source says about the instance beside its user-data."""

    instance_id: str = ""
    hostname: str = ""
    ssh_authorized_keys: tuple[str, ...] = ()


def _fail(where: str, message: str) -> UserError:
    return UserError(f"{where}: {message}")


def _mapping(value: Any, where: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(where, f"must be a mapping, got {type(value).__name__}")
    for key in value:
        if key not in allowed:
            raise _fail(where, f"unknown key '{key}' (known: {', '.join(allowed)})")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise _fail(where, f"must be a string, got {type(value).__name__} {value!r}")
    return value


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list):
        raise _fail(where, f"must be a list of strings, got {type(value).__name__}")
    return [_string(item, f"{where}[{i}]") for i, item in enumerate(value)]


def hostname(value: Any, where: str) -> str:
    name = _string(value, where).strip().lower()
    if not _HOSTNAME.fullmatch(name):
        raise _fail(where, f"not a host name (letters, digits, '-', dots; at most 64): {value!r}")
    return name


def ssh_keys(value: Any, where: str) -> tuple[str, ...]:
    keys = []
    for i, key in enumerate(_strings(value, where)):
        key = key.strip()
        if "\n" in key or not _KEY_TYPE.search(key):
            raise _fail(f"{where}[{i}]", f"not one OpenSSH public key line: {key[:40]!r}")
        keys.append(key)
    return tuple(keys)


def _port(value: Any, where: str) -> Port:
    match = _PORT.fullmatch(_string(value, where))
    if match is None or not all(0 < int(match[n]) < 65536 for n in (1, 2)):
        raise _fail(where, f"expected 'HOST:CONTAINER' or 'HOST:CONTAINER/udp' ports, got {value!r}")
    return Port(int(match[1]), int(match[2]), match[4] or "tcp")


def _volume(value: Any, where: str) -> Volume:
    parts = _string(value, where).split(":")
    read_only = len(parts) == 3 and parts[2] == "ro"
    if len(parts) not in (2, 3) or (len(parts) == 3 and not read_only):
        raise _fail(where, f"expected '/var/HOST:/CONTAINER' or '…:ro', got {value!r}")
    host, inside = posixpath.normpath(parts[0]), posixpath.normpath(parts[1])
    if not parts[0].startswith("/var/") or not host.startswith("/var/") or ".." in parts[0].split("/"):
        raise _fail(where, f"the host side must be under /var (the rest is read-only), got {parts[0]!r}")
    if not inside.startswith("/"):
        raise _fail(where, f"the container side must be an absolute path, got {parts[1]!r}")
    return Volume(host, inside, read_only)


def _env(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise _fail(where, f"must be a mapping of NAME: value, got {type(value).__name__}")
    pairs = []
    for name, item in value.items():
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            raise _fail(where, f"not an environment variable name: {name!r}")
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise _fail(f"{where}.{name}", f"must be a string or number, got {type(item).__name__}")
        pairs.append((name, str(item)))
    return tuple(pairs)


def _container(value: Any, where: str) -> Container:
    data = _mapping(value, where, CONTAINER_KEYS)
    for required in ("name", "image"):
        if required not in data:
            raise _fail(where, f"'{required}' is required")
    name = _string(data["name"], f"{where}.name")
    if not _NAME.fullmatch(name):
        raise _fail(f"{where}.name", f"letters, digits, '_', '.', '-' (at most 63), got {name!r}")
    image = _string(data["image"], f"{where}.image").strip()
    if not image or any(c.isspace() for c in image):
        raise _fail(f"{where}.image", f"not an image reference: {image!r}")
    archive = _string(data.get("archive", ""), f"{where}.archive")
    if archive and not (_ARCHIVE.fullmatch(archive) or _ARCHIVE_URL.fullmatch(archive)):
        raise _fail(f"{where}.archive", "a file name at the top of the config volume or an "
                    f"http(s) URL ending in #sha256=<64 hex digits>, got {archive!r}")
    restart = _string(data.get("restart", "always"), f"{where}.restart")
    if restart not in RESTART_POLICIES:
        raise _fail(f"{where}.restart", f"one of {', '.join(RESTART_POLICIES)}, got {restart!r}")
    return Container(
        name=name,
        image=image,
        archive=archive,
        command=tuple(_strings(data.get("command", []), f"{where}.command")),
        env=_env(data.get("env", {}), f"{where}.env"),
        ports=tuple(_port(p, f"{where}.ports[{i}]") for i, p in enumerate(_list(data, "ports", where))),
        volumes=tuple(_volume(v, f"{where}.volumes[{i}]") for i, v in enumerate(_list(data, "volumes", where))),
        restart=restart,
    )


def _list(data: dict[str, Any], key: str, where: str) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise _fail(f"{where}.{key}", f"must be a list, got {type(value).__name__}")
    return value


def _tuf_root(value: Any, where: str) -> str:
    text = json.dumps(value) if isinstance(value, dict) else _string(value, where)
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        raise _fail(where, "not JSON (a TUF root.json, inline or as a string)") from None
    if not isinstance(parsed, dict) or "signed" not in parsed:
        raise _fail(where, "not a TUF root.json (no 'signed')")
    return text


def _pem(value: Any, where: str) -> str:
    text = _string(value, where)
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise _fail(where, "not a PEM certificate (no BEGIN CERTIFICATE line)")
    return text


def _hooks(value: Any, where: str) -> tuple[Hook, ...]:
    hooks = []
    for stage, scripts in _mapping(value, where, HOOK_STAGES).items():
        if not isinstance(scripts, dict):
            raise _fail(f"{where}.{stage}", f"must be a mapping of name: script, got {type(scripts).__name__}")
        for name, script in scripts.items():
            at = f"{where}.{stage}.{name}"
            if not isinstance(name, str) or not _NAME.fullmatch(name) or ".dpkg-" in name:
                raise _fail(at, "a hook's name is letters, digits, '_', '.' and '-', at most 63 "
                                "(the hooks of a stage run in name order)")
            text = _string(script, at)
            if not text.startswith("#!"):
                raise _fail(at, "must start with a #! line (it runs as an executable)")
            hooks.append(Hook(stage, name, text))
    return tuple(hooks)


def parse_document(data: Any, where: str) -> HostConfig:
    """A berth document (already loaded from YAML) as a declaration."""
    data = _mapping(data if data is not None else {}, where, DOCUMENT_KEYS)
    containers = tuple(_container(c, f"{where}.containers[{i}]")
                       for i, c in enumerate(_list(data, "containers", where)))
    names = [c.name for c in containers]
    for name in names:
        if names.count(name) > 1:
            raise _fail(f"{where}.containers", f"the name '{name}' is declared twice")
    agent = data.get("agent", {})
    if not isinstance(agent, dict):
        raise _fail(f"{where}.agent", f"must be a mapping of setting: value, got {type(agent).__name__}")
    if "state_dir" in agent:
        raise _fail(f"{where}.agent", "'state_dir' is the image's to set: the declaration itself is kept there")
    return HostConfig(
        hostname=hostname(data["hostname"], f"{where}.hostname") if data.get("hostname") else "",
        ssh_authorized_keys=ssh_keys(data.get("ssh_authorized_keys", []), f"{where}.ssh_authorized_keys"),
        agent=check_settings(agent, f"{where}.agent"),
        tuf_root=_tuf_root(data["tuf_root"], f"{where}.tuf_root") if data.get("tuf_root") else "",
        server_ca=_pem(data["server_ca"], f"{where}.server_ca") if data.get("server_ca") else "",
        containers=containers,
        hooks=_hooks(data["hooks"], f"{where}.hooks") if data.get("hooks") else (),
    )


def _cloud_config(data: Any, where: str) -> HostConfig:
    data = _mapping(data if data is not None else {}, where, CLOUD_CONFIG_KEYS)
    inner = parse_document(data.get("berth"), f"{where}.berth")
    keys = list(ssh_keys(data.get("ssh_authorized_keys", []), f"{where}.ssh_authorized_keys"))
    users = data.get("users", [])
    if not isinstance(users, list):
        raise _fail(f"{where}.users", f"must be a list, got {type(users).__name__}")
    # berth hosts have one account, root: the first user's keys are its keys.
    if users and users[0] != "default":
        first = _mapping(users[0], f"{where}.users[0]", USER_KEYS)
        keys += ssh_keys(first.get("ssh_authorized_keys", []), f"{where}.users[0].ssh_authorized_keys")
    outer = hostname(data["hostname"], f"{where}.hostname") if data.get("hostname") else ""
    if outer and inner.hostname and outer != inner.hostname:
        raise _fail(where, f"two host names: hostname {outer!r} and berth.hostname {inner.hostname!r}")
    return HostConfig(
        hostname=inner.hostname or outer,
        ssh_authorized_keys=_unique((*keys, *inner.ssh_authorized_keys)),
        agent=inner.agent,
        tuf_root=inner.tuf_root,
        server_ca=inner.server_ca,
        containers=inner.containers,
        hooks=inner.hooks,
    )


def _unique(items: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def parse_user_data(raw: bytes, where: str) -> HostConfig:
    """User-data as a source hands it over: a berth document or #cloud-config."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _fail(where, "not UTF-8 text (gzip or MIME multi-part user-data is not read)") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise _fail(where, f"not valid YAML ({str(error).splitlines()[0]})") from None
    if text.lstrip().startswith(CLOUD_CONFIG_HEADER):
        return _cloud_config(data, where)
    if data is not None and not isinstance(data, dict):
        raise _fail(where, "neither #cloud-config nor a berth document (a YAML mapping)")
    return parse_document(data, where)


def declare(meta: MetaData, user_data: bytes | None, where: str) -> HostConfig:
    """The declaration a source gives: its user-data, with the instance's own
    host name and keys (from its metadata) where the user-data sets none / as well."""
    user = parse_user_data(user_data, where) if user_data else HostConfig()
    # Clouds name instances by FQDN (ip-10-0-0-1.ec2.internal): the host name is its
    # first label, as cloud-init does unless told to prefer the FQDN.
    meta_name = meta.hostname.strip().lower().split(".")[0]
    return HostConfig(
        hostname=user.hostname or (meta_name if _HOSTNAME.fullmatch(meta_name) else ""),
        ssh_authorized_keys=_unique((*meta.ssh_authorized_keys, *user.ssh_authorized_keys)),
        agent=user.agent,
        tuf_root=user.tuf_root,
        server_ca=user.server_ca,
        containers=user.containers,
        hooks=user.hooks,
    )
