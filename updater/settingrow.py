"""The one shape of a settings row, mkosi's model: name, kind, default, help.

The three settings tables (the build's, builder/settings.py; the agent's,
updater/agent/settings.py; the fleet server's, updater/fleet/settings.py) declare
each key once as a ``Setting``. ``kind`` is a type (str, int, bool, list, dict)
or a parser returning the typed value and raising ValueError naming what it
expected; each table's loader says how its rows are checked. A row a command
line also sets is the option ``--<name with dashes>`` (``option``), its help the
row's. A NamedTuple, so a row also unpacks as ``name, kind, default, help``.
Pure stdlib; shipped on hosts (the agent's table uses it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple


class Setting(NamedTuple):
    name: str
    kind: Callable[[Any], Any]
    default: Any
    help: str

    @property
    def option(self) -> str:
        """The command-line option that sets this row's key."""
        return option_for(self.name)


def option_for(name: str) -> str:
    return f"--{name.replace('_', '-')}"
