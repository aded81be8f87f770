"""What the server decides from: the settings file and the repository's releases, kept fresh.

Both are re-read when their file changes (checked at most once a second, so a
busy server does not stat on every request) or when an operator asks for a
reload. Every server process does this on its own, so a reload reaches all of
them within a second without talking to each other.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from updater.fleet.settings import FleetSettings, load_settings
from updater.release import Release, releases_from_targets

CHECK_EVERY_S = 1.0


@dataclass(frozen=True)
class Snapshot:
    settings: FleetSettings
    releases: tuple[Release, ...]


def _mtime(path: Path | None) -> float | None:
    try:
        return None if path is None else os.stat(path).st_mtime_ns
    except OSError:
        return None


def read_releases(repository: Path) -> tuple[Release, ...]:
    """Releases in ``repository/metadata/targets.json``; none while it does not exist."""
    path = repository / "metadata" / "targets.json"
    try:
        return tuple(releases_from_targets(json.loads(path.read_text())["signed"]))
    except FileNotFoundError:
        return ()
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"{path}: not a usable targets.json ({error!r})") from None


class Catalog:
    def __init__(self, config: Path | None) -> None:
        self.config = config
        self._checked = 0.0
        self._stamps: tuple[float | None, float | None] = (None, None)
        self._snapshot = self._load()

    def _targets(self, settings: FleetSettings) -> Path:
        return settings.repository / "metadata" / "targets.json"

    def _load(self) -> Snapshot:
        settings = load_settings(self.config)
        self._stamps = (_mtime(self.config), _mtime(self._targets(settings)))
        return Snapshot(settings, read_releases(settings.repository))

    def reload(self) -> Snapshot:
        """Re-read both files now; a broken file keeps the last good snapshot and raises."""
        self._snapshot = self._load()
        self._checked = time.monotonic()
        return self._snapshot

    def current(self) -> Snapshot:
        now = time.monotonic()
        if now - self._checked >= CHECK_EVERY_S:
            self._checked = now
            stamps = (_mtime(self.config), _mtime(self._targets(self._snapshot.settings)))
            if stamps != self._stamps:
                try:
                    self._snapshot = self._load()
                except (ValueError, OSError):
                    # Keep deciding from the last good state; an admin reload shows the error.
                    self._stamps = stamps
        return self._snapshot
