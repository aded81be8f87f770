"""The one shape of a settings row, mkosi's model: name, kind, default, help; and
the one way a row's value is checked.

The three settings tables (the build's, builder/settings.py; the agent's,
updater/agent/settings.py; the fleet server's, updater/fleet/settings.py) declare
each key once as a ``Setting``. ``kind`` is a type (str, int, bool, list, dict),
a type with a rule (``typed(int, between(1, 9))``: the range, choices or grammar
a value must also meet) or a parser returning the typed value. ``Setting.parse``
checks a value against its row: the wrong type raises ``WrongType``, a value
its rule refuses ``ValueError(reason)``; ``read`` does that for a key found in a
file, refusing unknown keys. Each table words the key and the file its own way
(a ``Naming``), so users see the messages they always saw. A row a command line
also sets is the option ``--<name with dashes>`` (``option``), its help the
row's. A NamedTuple, so a row also unpacks as ``name, kind, default, help``.
Pure stdlib; shipped on hosts (the agent's table uses it).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

# A rule refuses a value of the right type by returning why ("must be ..."), or None.
Rule = Callable[[Any], str | None]


# The kinds a number may be given as (a bool never: it is an int in Python, not in YAML).
NUMBER = (int, float)


class WrongType(ValueError):
    """A value not of its row's type."""

    def __init__(self, kind: type | tuple[type, ...], value: Any) -> None:
        self.kind, self.value = kind, value
        super().__init__(f"must be {_type_name(kind)}, got {type(value).__name__} {value!r}")

    @property
    def kind_name(self) -> str:
        return _type_name(self.kind)


def _type_name(kind: type | tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__


class Unknown(ValueError):
    """A key no row of the table declares."""


@dataclass(frozen=True)
class Typed:
    """A row's kind: its type, and the rule a value of that type must also meet."""

    type: type | tuple[type, ...]
    rule: Rule | None = None

    def __call__(self, value: Any) -> Any:
        # bool is an int subclass; a YAML `yes` must not pass as a size.
        if not isinstance(value, self.type) or (isinstance(value, bool) and self.type is not bool):
            raise WrongType(self.type, value)
        why = self.rule(value) if self.rule is not None else None
        if why is not None:
            raise ValueError(why)
        return value


def typed(kind: type | tuple[type, ...], rule: Rule | None = None) -> Typed:
    return Typed(kind, rule)


def between(low: float | None, high: float | None,
            wording: str = "must be between {low} and {high}, got {value}") -> Rule:
    """A number from ``low`` to ``high``, both included (None: no bound that side)."""
    def rule(value: Any) -> str | None:
        inside = (low is None or value >= low) and (high is None or value <= high)
        return None if inside else wording.format(low=low, high=high, value=value)

    return rule


def worded(kind: Typed, wording: str) -> Callable[[Any], Any]:
    """``kind``'s check with every refusal in one wording (``{value!r}``: the value): a
    parser for a table whose messages say what a key expects, whatever was wrong."""
    def parse(value: Any) -> Any:
        try:
            return kind(value)
        except ValueError:
            raise ValueError(wording.format(value=value)) from None

    return parse


def one_of(choices: Collection[str]) -> Rule:
    return lambda value: None if value in choices else f"must be one of {', '.join(choices)}, got {value!r}"


class Setting(NamedTuple):
    name: str
    kind: Callable[[Any], Any]
    default: Any
    help: str

    @property
    def option(self) -> str:
        """The command-line option that sets this row's key."""
        return option_for(self.name)

    @property
    def type(self) -> type | None:
        """The row's type, None for a parser (which takes any value and says what it expected)."""
        if isinstance(self.kind, Typed):
            return self.kind.type if isinstance(self.kind.type, type) else None
        return self.kind if isinstance(self.kind, type) else None

    def parse(self, value: Any) -> Any:
        """``value`` as this row holds it: WrongType, or ValueError naming what the rule wants."""
        if isinstance(self.kind, type):
            return Typed(self.kind)(value)
        return self.kind(value)


@dataclass(frozen=True)
class Naming:
    """How a table's errors name the file (``where``) and the key: each table's own words."""

    unknown: Callable[[str, str], str]  # (where, key)
    wrong_type: Callable[[str, str, WrongType], str]  # (where, key, error)
    refused: Callable[[str, str, str], str]  # (where, key, reason)


def read(rows: Mapping[str, Setting], key: str, value: Any, where: str, naming: Naming,
         error: Callable[[str], Exception]) -> Any:
    """``key``'s value from ``where`` checked against its row; ``error`` carries the message
    (each table raises its own kind), which names the file and the key."""
    row = rows.get(key)
    if row is None:
        raise error(naming.unknown(where, key))
    try:
        return row.parse(value)
    except WrongType as refused:
        raise error(naming.wrong_type(where, key, refused)) from None
    except ValueError as refused:
        raise error(naming.refused(where, key, str(refused))) from None


def option_for(name: str) -> str:
    return f"--{name.replace('_', '-')}"
