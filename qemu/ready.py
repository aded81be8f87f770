"""The guest's readiness announcement on the serial console, as the harness reads it.

Printed once per boot by berth-ready.service (images/host) after
boot-complete.target is reached and the boot is blessed:

    BERTH-READY version=<v> slot=<a|b> roothash=<hex> uptime_s=<seconds>
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PATTERN = re.compile(
    r"BERTH-READY version=(?P<version>[0-9.]+) slot=(?P<slot>[ab]) "
    r"roothash=(?P<roothash>[0-9a-f]{64}) uptime_s=(?P<uptime>[0-9]+(?:\.[0-9]+)?)"
)


@dataclass(frozen=True)
class Ready:
    version: str
    slot: str
    roothash: str
    uptime_s: float

    @classmethod
    def from_match(cls, match: re.Match[str]) -> Ready:
        return cls(
            version=match["version"],
            slot=match["slot"],
            roothash=match["roothash"],
            uptime_s=float(match["uptime"]),
        )
