"""What boots of a new version that fell back left on /var: the rollback's evidence.

- ``<state_dir>/trial-failures/<boot id>``: written by berth-trial-failed.service
  (the OnFailure= handler of every berth-check-*) through /usr/lib/berth/record-trial-failure
  before it reboots: the root hash of the boot and the check units that failed.
- ``pstore_dir`` (systemd-pstore's /var/lib/systemd/pstore): the kernel's records of
  a panic, kept by efi-pstore in UEFI variables across the reboot and moved here by
  systemd-pstore.service early in the next boot (before the agent starts).

Nothing here decides: policy.judge_fallback does.
"""

from __future__ import annotations

from pathlib import Path

TRIAL_FAILURES = "trial-failures"


def _marker(path: Path) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def failed_checks(state_dir: Path, roothash: str) -> tuple[str, ...]:
    """The check units that failed on boots of ``roothash`` (each named once)."""
    directory = state_dir / TRIAL_FAILURES
    units: dict[str, None] = {}
    for path in sorted(directory.glob("*")) if directory.is_dir() else []:
        fields = _marker(path)
        if fields.get("roothash") == roothash:
            units.update(dict.fromkeys(fields.get("units", "").split() or ["an unnamed check"]))
    return tuple(units)


def forget_trial_failures(state_dir: Path, roothash: str) -> None:
    """Drop the markers of ``roothash`` once judged, so a try again starts clean."""
    directory = state_dir / TRIAL_FAILURES
    for path in list(directory.glob("*")) if directory.is_dir() else []:
        if _marker(path).get("roothash") == roothash:
            path.unlink(missing_ok=True)


def panics_since(pstore_dir: Path, since: float) -> int:
    """How many panic records systemd-pstore kept that arrived at or after ``since``."""
    if not pstore_dir.is_dir():
        return 0
    # systemd-pstore makes one directory per record (or a file, with Storage=external's
    # flat layout); its mtime is when it moved the record there, on the boot after.
    return sum(1 for entry in pstore_dir.iterdir() if entry.stat().st_mtime >= since)
