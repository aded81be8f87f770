"""A swarm node's labels as berth sets them (pure: no I/O).

A host's declaration gives user labels (``swarm.labels``: zone, disk, …); the agent
adds ``berth.group`` (its rollout group), so services can be placed by constraints
(``--constraint node.labels.berth.group==edge``), as CoreOS Fleet's tags placed units.
The ``berth.`` prefix is the agent's own: a declaration may not set it. Label keys are
kept to what docker's own docs recommend (lower case, digits, '.', '-', '_'), so a key
never needs quoting in a constraint.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

RESERVED_PREFIX = "berth."
GROUP_LABEL = "berth.group"
_KEY = re.compile(r"[a-z0-9]([a-z0-9._-]{0,126}[a-z0-9])?")
MAX_VALUE = 256


def label_problem(labels: Any) -> str | None:
    """Why ``labels`` may not be declared (None: they may): a mapping of key: text."""
    if not isinstance(labels, dict):
        return f"must be a mapping of label: value, got {type(labels).__name__}"
    for key, value in labels.items():
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            return (f"label {key!r}: a key is lower-case letters, digits, '.', '-' and '_' "
                    "(at most 128, starting and ending with a letter or digit)")
        if key.startswith(RESERVED_PREFIX):
            return f"label {key!r}: the prefix {RESERVED_PREFIX!r} is the agent's own (it sets {GROUP_LABEL})"
        if not isinstance(value, str):
            return f"label {key!r}: the value must be a string, got {type(value).__name__} {value!r}"
        if len(value) > MAX_VALUE or any(not c.isprintable() for c in value):
            return f"label {key!r}: the value is printable text of at most {MAX_VALUE} characters"
    return None


def wanted(group: str, declared: Mapping[str, str]) -> dict[str, str]:
    """The labels this host's node carries: the declared ones and its group."""
    return {**declared, GROUP_LABEL: group}


@dataclass(frozen=True)
class LabelChange:
    add: tuple[tuple[str, str], ...]  # set (or changed)
    remove: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not self.add and not self.remove

    def arguments(self) -> list[str]:
        """``docker node update`` arguments making the change."""
        return ([arg for key, value in self.add for arg in ("--label-add", f"{key}={value}")]
                + [arg for key in self.remove for arg in ("--label-rm", key)])


def label_change(now: Mapping[str, str], want: Mapping[str, str], set_before: frozenset[str]) -> LabelChange:
    """What turns the node's labels ``now`` into ``want``: a label the agent set before
    (``set_before``) and no longer wanted goes; labels someone set by hand stay."""
    add = tuple(sorted((k, v) for k, v in want.items() if now.get(k) != v))
    remove = tuple(sorted(k for k in now if k not in want and (k in set_before or k.startswith(RESERVED_PREFIX))))
    return LabelChange(add, remove)
