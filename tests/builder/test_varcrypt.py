"""`var_encryption: tpm2` (builder/varcrypt.py): the build leaves /var's space free and gives
the root what makes /var LUKS2 at first boot, sealed to the PCR key's policy; pure parts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from builder import artifacts, layout, pcrkey, varcrypt
from builder.lint import lint
from builder.settings import parse
from updater import gpt


def test_a_tpm2_build_makes_no_var_partition_a_clear_one_does() -> None:
    assert "30-var.conf" in layout.repart_definitions(parse({}, "x.yaml"))
    assert "30-var.conf" not in layout.repart_definitions(parse({"var_encryption": "tpm2"}, "x.yaml"))


def test_the_first_boot_makes_var_luks2_sealed_to_the_pcr_key_and_opens_it_headless() -> None:
    definition = varcrypt.repart_definition(1024)
    for line in ("Type=var", "Label=var", "Format=ext4", "Encrypt=tpm2", "SizeMinBytes=1024M"):
        assert line in definition.splitlines()
    dropin = varcrypt.repart_dropin()
    start = [line for line in dropin.splitlines() if line.startswith("ExecStart=systemd-repart")]
    assert start and {"--tpm2-pcrs=", f"--tpm2-public-key=/{varcrypt.PUBLIC_KEY}",
                      "--tpm2-public-key-pcrs=11"} <= set(start[0].split())
    assert "OnFailure=emergency.target" in dropin
    (entry,) = [line for line in varcrypt.crypttab().splitlines() if not line.startswith("#")]
    name, device, key, options = entry.split()
    assert (name, device, key) == ("var", "PARTLABEL=var", "-")
    assert {"tpm2-device=auto", "headless=true", f"tpm2-signature={varcrypt.SIGNATURE}"} == set(options.split(","))
    (mount,) = [line for line in varcrypt.fstab().splitlines() if not line.startswith("#")]
    assert mount.split()[:3] == ["/dev/mapper/var", "/var", "ext4"]


def test_the_image_tree_has_the_public_key_only_and_a_script_that_parses(tmp_path: Path) -> None:
    key = pcrkey.make(tmp_path / "keys")
    tree = tmp_path / "tree"
    varcrypt.image_tree(key, 1024, tree)
    assert (tree / varcrypt.PUBLIC_KEY).read_bytes() == key.public.read_bytes()
    assert lint(tree) == []  # no private key went in
    script = tree / varcrypt.UNAVAILABLE
    assert script.stat().st_mode & 0o111 and subprocess.run(["sh", "-n", str(script)], check=False).returncode == 0
    assert (tree / "usr/lib/repart.d/50-var.conf").is_file() and (tree / "etc/crypttab").is_file()


def test_growing_a_disk_leaves_free_space_after_its_partitions(tmp_path: Path) -> None:
    disk = tmp_path / "disk.raw"
    with disk.open("wb") as f:
        f.truncate(8 << 20)
    subprocess.run(["sfdisk", "-q", str(disk)], input="label: gpt\nsize=2MiB, name=esp\nsize=2MiB, name=root\n",
                   text=True, check=True)
    before = gpt.read_partitions(str(disk))
    artifacts.grow(disk, 16 << 20)
    assert disk.stat().st_size == 24 << 20
    assert gpt.read_partitions(str(disk)) == before
    table = json.loads(subprocess.run(["sfdisk", "-J", str(disk)], capture_output=True, text=True,
                                      check=True).stdout)["partitiontable"]
    assert table["lastlba"] == (24 << 20) // 512 - 34  # the backup GPT at the new end
