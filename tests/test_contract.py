"""The disk, boot and manifest contract: what builder, agent, publisher and lab share."""

from __future__ import annotations

import json
import uuid

import pytest

from updater import contract
from updater.contract import BootEntry, ContractError, Manifest

ROOTHASH = "483d726610fae1d43c6f2451dfb5206c13b6b616f4c4e158a041be0f08608416"


def _manifest() -> Manifest:
    return Manifest(
        image_id="berth",
        version="1.2.0",
        engine="docker",
        roothash=ROOTHASH,
        slot_size=1 << 30,
        verity_slot_size=9 << 20,
        artifacts={
            "uki.efi": contract.Artifact(3, "c" * 64),
            "root.erofs": contract.Artifact(1, "a" * 64),
        },
        packages=(contract.Package("systemd", "257", 10), contract.Package("bash", "5.2", 2)),
    )


def test_partition_uuids_are_the_root_hash_halves() -> None:
    assert contract.uuids_from_roothash(ROOTHASH) == (
        "483d7266-10fa-e1d4-3c6f-2451dfb5206c",
        "13b6b616-f4c4-e158-a041-be0f08608416",
    )
    for bad in ("", ROOTHASH[:-1], ROOTHASH.upper(), "g" * 64):
        with pytest.raises(ContractError, match="64 lower-case hex"):
            contract.uuids_from_roothash(bad)


def test_type_uuids_are_lower_case_uuids_per_architecture() -> None:
    types = [contract.TYPE_ESP, contract.TYPE_VAR]
    types += [t for r in contract.ROOT_TYPES.values() for t in (r.root, r.verity)]
    assert all(str(uuid.UUID(t)) == t for t in types)
    assert len(set(types)) == len(types)
    assert contract.BUILD_ARCHITECTURE in contract.ROOT_TYPES


def test_slot_labels_name_the_release_and_empty_slots_have_none() -> None:
    assert contract.slot_labels("berth", "1.2") == ("berth_1.2", "berth_1.2_verity")
    assert contract.version_of_label("my_image_1.2") == "1.2"
    assert contract.version_of_label(contract.EMPTY_LABEL) is None


def test_uki_names_carry_boot_counting() -> None:
    assert contract.uki_filename("berth", "1.2") == "berth_1.2.efi"
    staged = BootEntry.parse(contract.uki_filename("berth", "1.2", 3))
    assert staged == BootEntry("berth_1.2+3.efi", "berth", "1.2", 3, 0)
    assert not staged.blessed and not staged.bad
    tried_out = BootEntry.parse("my_image_1.10+0-3.efi")
    assert tried_out and (tried_out.image_id, tried_out.version, tried_out.bad) == ("my_image", "1.10", True)
    assert BootEntry.parse("berth_1.2.efi.partial") is None
    assert BootEntry.parse("notes.txt") is None
    assert BootEntry.parse("berth_1.2.efi\n") is None


def test_manifest_round_trips_sorted_and_frozen() -> None:
    manifest = _manifest()
    text = manifest.to_json()
    assert Manifest.from_json(text) == manifest
    document = json.loads(text)
    assert list(document["artifacts"]) == ["root.erofs", "uki.efi"]
    assert [p["name"] for p in document["packages"]] == ["bash", "systemd"]
    assert manifest.name == "berth_1.2.0"
    with pytest.raises(TypeError):
        manifest.artifacts["disk.raw"] = contract.Artifact(0, "")  # type: ignore[index]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("roothash"), "missing 'roothash'"),
        (lambda d: d.update(built_by="someone"), "unknown key 'built_by'"),
        (lambda d: d.update(slot_size="1G"), "'slot_size' must be int"),
        (lambda d: d.update(slot_size=True), "'slot_size' must be int"),
        (lambda d: d.update(version="1.2-rc1"), "'version': version must be dotted integers"),
        (lambda d: d.update(roothash="00"), "root hash must be 64"),
        (lambda d: d["artifacts"]["uki.efi"].pop("sha256"), "missing 'sha256' in 'artifacts.uki.efi'"),
        (lambda d: d["artifacts"].update(x=[]), "'artifacts.x' must be an object"),
        (lambda d: d["packages"][0].update(size=1), "unknown key 'size' in 'packages[0]'"),
        (lambda d: d.update(packages={}), "'packages' must be list"),
    ],
)
def test_manifest_from_json_is_strict(change, message: str) -> None:  # type: ignore[no-untyped-def]
    document = json.loads(_manifest().to_json())
    change(document)
    with pytest.raises(ContractError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Manifest.from_json(json.dumps(document))
    with pytest.raises(ContractError, match="not JSON"):
        Manifest.from_json("{")
    with pytest.raises(ContractError, match="must be an object"):
        Manifest.from_json("[]")
