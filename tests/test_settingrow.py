"""The one settings row: its value checks, written once, worded by each table."""

from __future__ import annotations

import pytest

from updater.settingrow import Naming, Setting, WrongType, between, one_of, read, typed

ROWS = {
    "tries": Setting("tries", typed(int, between(1, 9)), 3, "tries"),
    "engine": Setting("engine", typed(str, one_of(("docker", "podman"))), "docker", "engine"),
    "waves": Setting("waves", list, [], "waves"),
}
NAMING = Naming(
    unknown=lambda where, key: f"{where}: unknown '{key}'",
    wrong_type=lambda where, key, error: f"{where}: '{key}' {error}",
    refused=lambda where, key, why: f"{where}: '{key}': {why}",
)


@pytest.mark.parametrize("key, value, message", [
    ("tries", True, "f.yaml: 'tries' must be int, got bool True"),  # a YAML yes is no count
    ("tries", "3", "f.yaml: 'tries' must be int, got str '3'"),
    ("tries", 10, "f.yaml: 'tries': must be between 1 and 9, got 10"),
    ("engine", "lxc", "f.yaml: 'engine': must be one of docker, podman, got 'lxc'"),
    ("waves", {}, "f.yaml: 'waves' must be list, got dict {}"),
    ("colour", "blue", "f.yaml: unknown 'colour'"),
])
def test_a_refused_value_names_the_file_and_the_key(key: str, value: object, message: str) -> None:
    with pytest.raises(LookupError, match=None) as error:
        read(ROWS, key, value, "f.yaml", NAMING, LookupError)
    assert str(error.value) == message


def test_good_values_come_back_as_given() -> None:
    assert [read(ROWS, k, v, "f", NAMING, LookupError) for k, v in
            (("tries", 9), ("engine", "podman"), ("waves", [1]))] == [9, "podman", [1]]
    assert [row.type for row in ROWS.values()] == [int, str, list]
    assert Setting("pin", str.strip, None, "a parser").type is None
    with pytest.raises(WrongType):
        ROWS["tries"].parse(1.5)


def test_a_parser_may_word_every_refusal_one_way() -> None:
    from updater.settingrow import NUMBER, worded

    share = worded(typed(NUMBER, between(0, 1)), "expected a share, got {value!r}")
    assert share(0) == 0 and share(0.5) == 0.5
    for bad in (True, "0.5", 1.5, -1):
        with pytest.raises(ValueError, match=r"^expected a share, got "):
            share(bad)
