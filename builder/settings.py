"""Build settings: declared once in SETTINGS, parsed into a frozen BuildSettings.

configs/image.yaml holds the defaults; `berth build` flags override single
fields. Every problem names the key and the file in one line.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder import formats
from cli.errors import UserError
from updater.contract import artifact_name
from updater.settingrow import Naming, Setting, between, one_of, option_for, read, typed
from updater.version import Version, VersionError

ENGINES = ("docker", "podman")
FAULTS = ("none", "health-check", "kernel-panic")
VAR_ENCRYPTIONS = ("none", "tpm2")
_IMAGE_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")


def _image_id(value: str) -> str | None:
    if _IMAGE_ID.fullmatch(value):
        return None
    return f"must be lower-case letters, digits and '-' (no '_'), got {value!r}"


def _version(value: str) -> str | None:
    try:
        Version.parse(value)  # the one version grammar, the agent's and the server's
    except VersionError:
        return f"must be dotted integers like 1.2.3, got {value!r}"
    return None


def _formats(value: str) -> str | None:
    try:
        formats.parse(value)
    except UserError as error:
        return str(error)
    return None


_SIZE = typed(int, lambda value: None if value > 0 else f"must be positive, got {value}")

SETTINGS: tuple[Setting, ...] = (
    Setting("image_id", typed(str, _image_id), "berth", "image name: partition labels, UKI and artifact names"),
    Setting("version", typed(str, _version), "1.0.0", "release version, dotted integers (1 to 4 parts)"),
    Setting("engine", typed(str, one_of(ENGINES)), "docker", f"container engine: one of {', '.join(ENGINES)}"),
    Setting("slot_size_mib", _SIZE, 1024, "size of each root slot (A and B) in MiB"),
    Setting("slot_margin_percent", typed(int, between(0, 99)), 25,
            "free share of a slot the root must leave for growth"),
    Setting("esp_size_mib", _SIZE, 256, "EFI system partition size in MiB (holds two or three UKIs)"),
    Setting("var_size_mib", _SIZE, 1024, "initial var partition size in MiB (grows at first boot)"),
    Setting(
        "formats",
        typed(str, _formats),
        ",".join(formats.DEFAULT),
        f"disk formats to write, comma-separated: {', '.join(formats.FILES)} (raw always)",
    ),
    Setting(
        "fault",
        typed(str, one_of(FAULTS)),
        "none",
        "build a release that fails on purpose (fallback tests): none, "
        "health-check (a health check fails at every boot) or kernel-panic (PID 1 exits at boot)",
    ),
    Setting(
        "secure_boot_keys",
        str,
        "",
        "key directory from `berth keys init` whose secure-boot/ db key signs boot loader and "
        "UKIs (enrolment files on the ESP); empty: an unsigned image",
    ),
    Setting(
        "var_encryption",
        typed(str, one_of(VAR_ENCRYPTIONS)),
        "none",
        "none: /var in clear (runs anywhere); tpm2: /var is LUKS2, made at first boot and sealed "
        "to the TPM under the UKIs' signed PCR 11 policy (needs secure_boot_keys with a PCR key, "
        "and a TPM: without one the first boot fails)",
    ),
)
_BY_NAME = {s.name: s for s in SETTINGS}
# The settings `berth build` also takes as options (builder/cli.py adds one per row).
FLAGS = tuple(_BY_NAME[name] for name in ("version", "engine", "formats", "secure_boot_keys", "var_encryption"))
_NAMING = Naming(
    unknown=lambda where, key: f"{where}: unknown key '{key}' (known: {', '.join(_BY_NAME)})",
    wrong_type=lambda where, key, error: f"{where}: key '{key}' {error}",
    refused=lambda where, key, why: f"{where}: key '{key}' {why}",
)


@dataclass(frozen=True)
class BuildSettings:
    image_id: str
    version: str
    engine: str
    slot_size_mib: int
    slot_margin_percent: int
    esp_size_mib: int
    var_size_mib: int
    formats: str
    fault: str
    secure_boot_keys: str
    var_encryption: str

    @property
    def artifact_name(self) -> str:
        return artifact_name(self.image_id, self.version)


def _check(name: str, value: Any, source: str) -> Any:
    return read(_BY_NAME, name, value, source, _NAMING, UserError)


def parse(data: Any, source: str) -> BuildSettings:
    """Turn a decoded YAML document into settings; `source` names the file in errors."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{source}: must be a mapping of settings, got {type(data).__name__}")
    values = {s.name: s.default for s in SETTINGS}
    for name, value in data.items():
        values[str(name)] = _check(str(name), value, source)
    return BuildSettings(**values)


def override(settings: BuildSettings, **changes: Any) -> BuildSettings:
    """Apply command-line overrides (None means "not given"), checked like file values."""
    given = {k: _check(k, v, option_for(k)) for k, v in changes.items() if v is not None}
    return dataclasses.replace(settings, **given)


def load(path: Path) -> BuildSettings:
    import yaml

    try:
        text = path.read_text()
    except OSError as error:
        raise UserError(f"{path}: cannot read: {error.strerror}") from error
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}:{where} not valid YAML") from error
    return parse(data, str(path))
