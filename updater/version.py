"""The one release version type: parsed where text enters, compared as numbers.

Agent, fleet server, publisher, builder settings and the eligibility rule all
take ``Version``; text becomes one at the edges (the manifest, os-release, the
agent's state file, TUF targets, wire messages, settings) and turns back into
its own text (``str``) only where it leaves (JSON on disk and on the wire, logs).
Pure stdlib: shipped on hosts.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

# Matched whole (re.fullmatch: "$" alone would let a trailing newline through); the
# anchored form is what the OpenAPI schema publishes. At most 9 digits a component:
# every version is a small int, never Python's 4300-digit limit.
_VERSION_RULE = r"[0-9]{1,9}(\.[0-9]{1,9}){0,3}"
VERSION_PATTERN = f"^{_VERSION_RULE}$"
_VERSION = re.compile(_VERSION_RULE)
# Versions have at most this many dotted parts.
MAX_VERSION_PARTS = 4


class VersionError(ValueError):
    """Text that is not a version; the message names the text."""


@functools.total_ordering
@dataclass(frozen=True)
class Version:
    """A release version: one to four dot-separated non-negative integers, e.g. 1.4.0.

    Ordered numerically; trailing zeros do not matter (1.2 == 1.2.0). Keeps the
    text it was parsed from, which is what it writes back (``str``).
    """

    text: str

    @classmethod
    def parse(cls, text: str) -> Version:
        if not isinstance(text, str) or not _VERSION.fullmatch(text):
            raise VersionError(f"version must be dotted integers like 1.2.3, got {text!r}")
        return cls(text)

    @property
    def key(self) -> tuple[int, ...]:
        parts = [int(p) for p in self.text.split(".")]
        while len(parts) > 1 and parts[-1] == 0:
            parts.pop()
        return tuple(parts)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __lt__(self, other: Version) -> bool:
        return self.key < other.key

    def __str__(self) -> str:
        return self.text
