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
from updater.settingrow import Setting, option_for
from updater.wire import Version, WireError

ENGINES = ("docker", "podman")
FAULTS = ("none", "health-check", "kernel-panic")
_IMAGE_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")


SETTINGS: tuple[Setting, ...] = (
    Setting("image_id", str, "berth", "image name: partition labels, UKI and artifact names"),
    Setting("version", str, "1.0.0", "release version, dotted integers (1 to 4 parts)"),
    Setting("engine", str, "docker", f"container engine: one of {', '.join(ENGINES)}"),
    Setting("slot_size_mib", int, 1024, "size of each root slot (A and B) in MiB"),
    Setting("slot_margin_percent", int, 25, "free share of a slot the root must leave for growth"),
    Setting("esp_size_mib", int, 256, "EFI system partition size in MiB (holds two or three UKIs)"),
    Setting("var_size_mib", int, 1024, "initial var partition size in MiB (grows at first boot)"),
    Setting(
        "formats",
        str,
        ",".join(formats.DEFAULT),
        f"disk formats to write, comma-separated: {', '.join(formats.FILES)} (raw always)",
    ),
    Setting(
        "fault",
        str,
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
)
_BY_NAME = {s.name: s for s in SETTINGS}
# Every build setting's kind is a type, checked with isinstance.
_TYPES: dict[str, type] = {s.name: s.kind for s in SETTINGS if isinstance(s.kind, type)}
assert len(_TYPES) == len(SETTINGS)
# The settings `berth build` also takes as options (builder/cli.py adds one per row).
FLAGS = tuple(_BY_NAME[name] for name in ("version", "engine", "formats", "secure_boot_keys"))


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

    @property
    def artifact_name(self) -> str:
        return artifact_name(self.image_id, self.version)


def _check(name: str, value: Any, source: str) -> Any:
    kind = _TYPES.get(name)
    if kind is None:
        raise UserError(f"{source}: unknown key '{name}' (known: {', '.join(_BY_NAME)})")
    # bool is an int subclass; a YAML `yes` must not pass as a size.
    if not isinstance(value, kind) or isinstance(value, bool):
        raise UserError(
            f"{source}: key '{name}' must be {kind.__name__}, got {type(value).__name__} {value!r}"
        )
    problem = _problem(name, value)
    if problem:
        raise UserError(f"{source}: key '{name}' {problem}")
    return value


def _problem(name: str, value: Any) -> str | None:
    if name == "engine" and value not in ENGINES:
        return f"must be one of {', '.join(ENGINES)}, got {value!r}"
    if name == "formats":
        try:
            formats.parse(value)
        except UserError as error:
            return str(error)
    if name == "fault" and value not in FAULTS:
        return f"must be one of {', '.join(FAULTS)}, got {value!r}"
    if name == "image_id" and not _IMAGE_ID.fullmatch(value):
        return f"must be lower-case letters, digits and '-' (no '_'), got {value!r}"
    if name == "version":
        try:
            Version.parse(value)  # the one version grammar, the agent's and the server's
        except WireError:
            return f"must be dotted integers like 1.2.3, got {value!r}"
    if name == "slot_margin_percent" and not 0 <= value < 100:
        return f"must be between 0 and 99, got {value}"
    if name.endswith("_mib") and value <= 0:
        return f"must be positive, got {value}"
    return None


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
