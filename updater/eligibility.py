"""Which release a host may take: the one rule the agent and the fleet server both apply.

The agent checks the server's offer (and, without a server, picks for itself) and
the server picks what a group's channel offers, with the same rule, so the two
can never disagree about a release. Pure stdlib, no I/O; shipped on hosts.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from updater.release import Release
from updater.version import Version


def refusal(
    release: Release,
    image_id: str,
    current: Version,
    refused: Collection[Version],
    pin: Version | None = None,
) -> str | None:
    """Why a host of ``image_id`` on ``current`` may not take ``release``, or None when it may.

    ``refused``: versions that rolled back on this host (never offered again);
    ``pin``: a channel's version to stop at (None: no ceiling).
    """
    version = release.sort_key
    if release.image_id != image_id:
        return f"image {release.image_id} is not {image_id}"
    if release.withdrawn:
        return "withdrawn"
    if version <= current:
        return f"not newer than {current}"
    if version in refused:
        return "rolled back on this host before"
    if pin is not None and version > pin:
        return f"beyond the channel's pin {pin}"
    if release.floor is not None and current < release.floor:
        return f"needs at least {release.min_version} to update from"
    return None


def newest_eligible(
    releases: Iterable[Release],
    image_id: str,
    current: Version,
    refused: Collection[Version],
    pin: Version | None = None,
) -> Release | None:
    """The newest release ``refusal`` allows (the first of equal versions), if any."""
    best: Release | None = None
    for release in releases:
        if refusal(release, image_id, current, refused, pin) is None and (
            best is None or release.sort_key > best.sort_key
        ):
            best = release
    return best
