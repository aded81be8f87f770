"""A real `berth build` of the default (docker) image and the podman variant, checked
from the outside: partition table, ESP, UKI command line, root file system, manifest."""

from __future__ import annotations

import fnmatch
import json
import subprocess
from pathlib import Path

import pytest

from builder import artifacts, layout, uki
from builder.lint import lint
from updater import contract

ROOT_TYPES = contract.ROOT_TYPES[contract.BUILD_ARCHITECTURE]

pytestmark = pytest.mark.slow
NAME = "berth_1.0.0"
# What a build writes besides manifest.json, spelled out (not read from the contract).
FILES = ["disk.raw", "disk.qcow2", "root.erofs", "root.verity", "uki.efi", "sbom.spdx.json"]


def _manifest(image: Path) -> dict:
    return json.loads((image / "manifest.json").read_text())


@pytest.fixture(scope="module")
def docker_root(default_image: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("docker-root") / "root"
    artifacts.extract_root(default_image / "root.erofs", root)
    return root


@pytest.fixture(scope="module")
def podman_root(podman_image: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("podman-root") / "root"
    artifacts.extract_root(podman_image / "root.erofs", root)
    return root


def test_artifact_directory_is_complete_and_alone(default_image: Path) -> None:
    assert default_image.name == NAME
    assert sorted(p.name for p in default_image.iterdir()) == sorted(
        [*FILES, "manifest.json"]
    )
    assert [p.name for p in default_image.parent.iterdir()] == [NAME]  # no partial build left


def test_gpt_follows_the_discoverable_partitions_layout(default_image: Path) -> None:
    manifest = _manifest(default_image)
    table = artifacts.read_table(default_image / "disk.raw")
    by_type = lambda t: [p for p in table if p.type_uuid == t]
    assert [p.label for p in by_type(contract.TYPE_ESP)] == ["esp"]
    assert sorted(p.label for p in by_type(ROOT_TYPES.root)) == ["_empty", NAME]
    assert sorted(p.label for p in by_type(ROOT_TYPES.verity)) == ["_empty", f"{NAME}_verity"]
    assert [p.label for p in by_type(contract.TYPE_VAR)] == ["var"]
    assert {p.size for p in by_type(ROOT_TYPES.root)} == {manifest["slot_size"]}
    assert {p.size for p in by_type(ROOT_TYPES.verity)} == {manifest["verity_slot_size"]}
    assert table[-1].label == "var"  # last, so it can grow into a larger disk
    root = layout.find(table, ROOT_TYPES.root, NAME)
    verity = layout.find(table, ROOT_TYPES.verity, f"{NAME}_verity")
    assert (root.part_uuid, verity.part_uuid) == contract.uuids_from_roothash(manifest["roothash"])


def test_uki_names_the_root_hash_and_the_serial_console(default_image: Path) -> None:
    cmdline = uki.cmdline((default_image / "uki.efi").read_bytes())
    words = cmdline.split()
    assert f"roothash={_manifest(default_image)['roothash']}" in words
    assert "console=ttyS0" in words
    assert not any(w.startswith("root=") for w in words)
    assert {".linux", ".initrd", ".osrel"} <= set(
        uki.sections((default_image / "uki.efi").read_bytes())
    )


def test_esp_holds_systemd_boot_and_the_first_uki_without_tries(
    default_image: Path, tmp_path: Path
) -> None:
    disk = default_image / "disk.raw"
    esp = layout.find(artifacts.read_table(disk), contract.TYPE_ESP, "esp")
    assert artifacts.list_esp(disk, esp, "/EFI/Linux") == [f"{NAME}.efi"]
    assert "BOOTX64.EFI" in artifacts.list_esp(disk, esp, "/EFI/BOOT")
    assert "systemd-bootx64.efi" in artifacts.list_esp(disk, esp, "/EFI/systemd")
    artifacts.copy_from_esp(disk, esp, f"/EFI/Linux/{NAME}.efi", tmp_path / "uki.efi")
    assert (tmp_path / "uki.efi").read_bytes() == (default_image / "uki.efi").read_bytes()


def test_root_holds_no_package_manager(docker_root: Path) -> None:
    for rel in (
        "usr/bin/apt",
        "usr/bin/apt-get",
        "usr/bin/dpkg",
        "var/lib/dpkg",
        "var/lib/apt",
        "etc/apt",
    ):
        assert not (docker_root / rel).exists(), rel
    assert lint(docker_root) == []


def test_root_is_a_container_host_with_the_berth_agent(docker_root: Path) -> None:
    os_release = (docker_root / "usr/lib/os-release").read_text()
    assert 'IMAGE_ID="berth"' in os_release or "IMAGE_ID=berth" in os_release
    assert "IMAGE_VERSION" in os_release and "1.0.0" in os_release
    assert (docker_root / "usr/sbin/dockerd").is_file()
    assert (docker_root / "usr/bin/docker").is_file()
    assert (docker_root / "usr/lib/berth/python/cli/main.py").is_file()
    assert (docker_root / "usr/lib/berth/python/updater/wire.py").is_file()
    python = docker_root / "usr/lib/berth/python"
    # Byte-compiled in the image by its own python3 (trixie: 3.13), nothing copied
    # from the build host's caches; the lint proves every .py has its .pyc.
    assert {p.suffixes[0] for p in python.rglob("*.pyc")} == {".cpython-313"}
    assert sorted(p.name for p in python.iterdir()) == ["cli", "updater"]
    assert not (python / "updater/fleet").exists() and not (python / "updater/publish").exists()
    wrapper = (docker_root / "usr/bin/berth").read_text()
    assert wrapper.startswith("#!/usr/bin/python3") and "/usr/lib/berth/python" in wrapper
    assert (
        "PARTLABEL=var /var ext4 defaults,x-systemd.growfs 0 2"
        in (docker_root / "etc/fstab").read_text()
    )
    assert (docker_root / "etc/machine-id").read_text() == ""
    assert not list((docker_root / "var").iterdir()) or [
        p.name for p in (docker_root / "var").iterdir()
    ] == ["tmp"]


# Run by the root's own python3: every module berth ships, and every module any of them
# imports anywhere (also inside a function), must import from what the root keeps.
_IMPORT_ALL = """
import ast, importlib, pathlib, sys
base = pathlib.Path("/usr/lib/berth/python")
sys.path.insert(0, str(base))
names = set()
for path in base.rglob("*.py"):
    names.add(".".join(path.relative_to(base).with_suffix("").parts).removesuffix(".__init__"))
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module)
failed = []
for name in sorted(names):
    try:
        importlib.import_module(name)
    except Exception as error:
        failed.append(f"{name}: {error!r}")
print(len(names))
print("\\n".join(failed), file=sys.stderr)
"""


def test_every_module_berth_ships_imports_in_the_root(docker_root: Path) -> None:
    """The standard library parts the image leaves out (images/host/mkosi.conf) are none
    that berth's code on a host imports."""
    result = subprocess.run(["chroot", str(docker_root), "/usr/bin/python3", "-B", "-c", _IMPORT_ALL],
                            check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
    assert int(result.stdout) > 50
    assert not (docker_root / "usr/lib/python3.13/unittest").exists()


def test_the_kernel_is_in_the_uki_only_and_matches_the_roots_modules(
    default_image: Path, docker_root: Path
) -> None:
    """The root's modules are the UKI's kernel's, and no second copy of that kernel (11 MiB)
    rides in the root: the lint finds none, and Debian's /vmlinuz links are gone."""
    uname = uki.sections((default_image / "uki.efi").read_bytes())[".uname"].rstrip(b"\0").decode()
    assert [p.name for p in (docker_root / "usr/lib/modules").iterdir()] == [uname]
    assert (docker_root / "usr/lib/modules" / uname / "modules.dep").is_file()
    assert not (docker_root / "usr/lib/modules" / uname / "vmlinuz").exists()
    assert not any((docker_root / name).is_symlink() for name in ("vmlinuz", "vmlinuz.old"))
    assert not [line for line in lint(docker_root) if line.startswith("kernel image")]


def test_the_boot_loader_is_tended_after_the_boot_not_on_its_path(docker_root: Path) -> None:
    # Updating systemd-boot and refreshing its random seed mount the ESP and write to it:
    # before sysinit.target (where systemd puts them) they were ~12 s of every TCG boot.
    for unit in ("systemd-boot-update.service", "systemd-boot-random-seed.service"):
        for wants in ("usr/lib", "etc"):
            assert not (docker_root / wants / "systemd/system/sysinit.target.wants" / unit).is_symlink(), unit
    enabled = docker_root / "etc/systemd/system/multi-user.target.wants"
    for unit in ("berth-boot-update.service", "berth-boot-random-seed.service"):
        assert (enabled / unit).is_symlink(), unit
        text = (docker_root / "usr/lib/systemd/system" / unit).read_text()
        assert "After=boot-complete.target" in text and "DefaultDependencies=no" in text


def test_manifest_hashes_and_sizes_match_the_files(default_image: Path) -> None:
    manifest = _manifest(default_image)
    assert (manifest["image_id"], manifest["version"], manifest["engine"]) == (
        "berth",
        "1.0.0",
        "docker",
    )
    assert set(manifest["artifacts"]) == set(FILES)
    for name, entry in manifest["artifacts"].items():
        path = default_image / name
        assert entry == {"size": path.stat().st_size, "sha256": artifacts.sha256(path)}, name
    names = {p["name"] for p in manifest["packages"]}
    assert {
        "docker.io",
        "systemd",
        "linux-image-cloud-amd64",
        "python3-tuf",
        "openssh-server",
    } <= names
    assert "apt" not in names and "podman" not in names
    assert all(p["version"] for p in manifest["packages"])


def test_qcow2_is_the_same_disk(default_image: Path) -> None:
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(default_image / "disk.qcow2")],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    assert info["format"] == "qcow2"
    assert info["virtual-size"] == (default_image / "disk.raw").stat().st_size


def test_podman_variant_swaps_only_the_engine(podman_image: Path, podman_root: Path) -> None:
    manifest = _manifest(podman_image)
    assert manifest["engine"] == "podman"
    names = {p["name"] for p in manifest["packages"]}
    assert "podman" in names and "docker.io" not in names
    assert (podman_root / "usr/bin/podman").is_file()
    assert (
        podman_root / "usr/lib/systemd/system-generators/podman-system-generator"
    ).exists()  # Quadlet
    assert not (podman_root / "usr/sbin/dockerd").exists()
    assert lint(podman_root) == []
    cmdline = uki.cmdline((podman_image / "uki.efi").read_bytes())
    assert f"roothash={manifest['roothash']}" in cmdline.split()


def test_initrd_and_root_carry_the_clouds_drivers(default_image: Path, docker_root: Path) -> None:
    from builder import initrd

    (modules,) = (docker_root / "usr/lib/modules").iterdir()
    builtin = {line.rsplit("/", 1)[-1].split(".ko")[0].replace("-", "_")
               for line in (modules / "modules.builtin").read_text().splitlines()}
    in_initrd = initrd.kernel_modules(uki.sections((default_image / "uki.efi").read_bytes())[".initrd"])
    # Root disks: virtio (QEMU, GCE), NVMe (EC2 Nitro, GCE), Hyper-V storage (Azure).
    for disk in ("virtio_blk", "virtio_scsi", "nvme", "hv_storvsc", "hv_vmbus"):
        assert disk in in_initrd | builtin, f"the initrd cannot find a root on {disk}"
    in_root = {path.name.split(".ko")[0].replace("-", "_") for path in modules.rglob("*.ko*")}
    # NICs: ENA (EC2), gVNIC (GCE), netvsc (Azure), virtio.
    for nic in ("ena", "gve", "hv_netvsc", "virtio_net"):
        assert nic in in_root | builtin, f"the root has no {nic} driver"


def test_the_initrd_leaves_a_panics_record_for_the_root(default_image: Path) -> None:
    """efi_pstore loads in the initrd, so a panic from then on is kept; only the root's
    systemd-pstore may move the record, to /var, where the agent reads the cause."""
    from builder import initrd

    archive = uki.sections((default_image / "uki.efi").read_bytes())[".initrd"]
    assert "efi_pstore" in initrd.kernel_modules(archive)
    assert [name for name in initrd.names(archive) if "systemd-pstore" in name] == []


def test_the_initrd_records_nothing_of_when_its_packages_were_installed(default_image: Path) -> None:
    """An install log (update-alternatives', dpkg's) holds the wall-clock time of its install,
    so two builds of the same inputs whose packages were installed apart differ in it (seen:
    a fresh machine's first run built two initrds that differed only in
    var/log/alternatives.log, and the reproducibility test failed)."""
    from builder import initrd

    names = initrd.names(uki.sections((default_image / "uki.efi").read_bytes())[".initrd"])
    assert [name for name in names if name.startswith("var/log/") and name.endswith(".log")] == []


def test_a_slow_root_is_waited_for_and_a_missing_one_reboots_to_be_counted(default_image: Path) -> None:
    """A loaded host's initrd waits minutes for its root, with the root's driver loaded
    at once; if the root still fails, the initrd reboots (systemd-boot counts the try)
    rather than sitting in an emergency shell nobody will see."""
    from builder import initrd

    sections = uki.sections((default_image / "uki.efi").read_bytes())
    words = uki.cmdline((default_image / "uki.efi").read_bytes()).split()
    assert "systemd.default_device_timeout_sec=300" in words
    loaded = next(w for w in words if w.startswith("rd.modules_load=")).split("=", 1)[1].split(",")
    assert {"virtio_blk", "dm_verity", "erofs"} <= set(loaded) <= initrd.kernel_modules(sections[".initrd"])
    names = initrd.names(sections[".initrd"])
    assert "usr/lib/systemd/system/emergency.service.d/berth.conf" in names
    assert not [n for n in names if n.endswith(("/systemd-cryptsetup-generator", "/systemd-sysv-generator"))]


def test_pid1_arms_a_hardware_watchdog_from_the_initrd_on(default_image: Path, docker_root: Path) -> None:
    """A hung boot is reset (and counted) even in the initrd: its PID 1 reads the root's
    watchdog settings and carries the drivers (with the watchdog core they need)."""
    from builder import initrd

    archive = uki.sections((default_image / "uki.efi").read_bytes())[".initrd"]
    drop_in = "usr/lib/systemd/system.conf.d/berth-watchdog.conf"
    assert drop_in in initrd.names(archive)
    assert "RuntimeWatchdogSec=" in (docker_root / drop_in).read_text()
    assert {"i6300esb", "wdat_wdt", "watchdog"} <= initrd.kernel_modules(archive)


def _modules(root: Path) -> Path:
    (directory,) = (root / "usr/lib/modules").iterdir()
    return directory


def test_the_root_keeps_what_the_engine_and_the_clouds_load_and_not_the_dropped_subtrees(
    docker_root: Path, podman_root: Path
) -> None:
    """builder/mkosi/prune-modules.finalize's two lists, checked on the built root: every
    kept module is there (a file or built in), and of the dropped subtrees only what a
    kept module needs is left; depmod ran after (the lint finds modules.dep true)."""
    from tests.builder import mkosiscripts

    prune = mkosiscripts.load("prune-modules.finalize")
    directory = _modules(docker_root)
    dep = prune.parse_dep((directory / "modules.dep").read_text())
    files = {prune.module_name(path): path for path in dep}
    builtin = {prune.module_name(p) for p in (directory / "modules.builtin").read_text().split()}
    kept = {name for name, _ in prune.KEPT}
    assert sorted(kept - set(files) - builtin) == []
    needed = {path for name in kept if name in files for path in (files[name], *dep[files[name]])}
    in_dropped = {path for path in dep if any(fnmatch.fnmatchcase(path, p) for p, _ in prune.DROPPED)}
    assert in_dropped <= needed, sorted(in_dropped - needed)
    for subtree in ("drivers/comedi", "drivers/infiniband", "fs/bcachefs", "fs/nfsd", "drivers/target",
                    "drivers/nvme/target", "net/tipc", "drivers/net/wwan"):
        assert not (directory / "kernel" / subtree).exists(), subtree
    on_disk = {p.relative_to(directory).as_posix() for p in directory.rglob("*.ko*")}
    assert on_disk == set(dep) and len(on_disk) > 800
    assert not [line for line in lint(docker_root) if "modules.dep" in line]
    # One list, both engines: the podman root carries the same modules.
    assert {p.relative_to(podman_root).as_posix() for p in _modules(podman_root).rglob("*.ko*")} == {
        p.relative_to(docker_root).as_posix() for p in directory.rglob("*.ko*")}


# The engine's modules, as dockerd, libnetwork, swarm mode and podman's netavark ask for them.
ENGINE_MODULES = ("overlay", "bridge", "br_netfilter", "veth", "vxlan", "ipvlan", "macvlan", "tun",
                  "wireguard", "nf_conntrack", "nf_nat", "nf_tables", "nft_compat", "nft_chain_nat",
                  "nft_masq", "iptable_nat", "iptable_filter", "ip6table_nat", "ip6table_filter",
                  "xt_MASQUERADE", "xt_conntrack", "xt_addrtype", "xt_nat", "xt_mark", "xt_ipvs",
                  "ip_vs", "ip_vs_rr", "xfrm_user", "esp4", "8021q", "dm_crypt", "btrfs", "xfs")


def test_modprobe_in_the_root_resolves_the_engines_modules(docker_root: Path) -> None:
    """The root's own modprobe, in a chroot, finds each engine module and everything it needs
    through the root's depmod output (modules.dep.bin), each file there."""
    version = _modules(docker_root).name
    for name in ENGINE_MODULES:
        result = subprocess.run(
            ["chroot", str(docker_root), "/usr/sbin/modprobe", "--dry-run", "--show-depends",
             "--set-version", version, name],
            check=False, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0 and result.stderr == "", f"{name}: {result.stderr}"
        loads = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("insmod ")]
        assert loads and loads[-1].rsplit("/", 1)[-1].split(".ko")[0].replace("-", "_") == name, result.stdout
        for path in loads:
            assert (docker_root / path.lstrip("/")).is_file(), path


def test_the_initrd_takes_its_modules_from_the_pruned_tree(default_image: Path, docker_root: Path) -> None:
    """mkosi makes the UKI's module initrd after the pruning: its root-disk drivers are all
    there (test above), and none of the RDMA or NVMe-oF target modules its `/nvme`
    pattern used to pull in."""
    from builder import initrd

    archive = uki.sections((default_image / "uki.efi").read_bytes())[".initrd"]
    modules = [name for name in initrd.names(archive) if ".ko" in name]
    in_root = {p.relative_to(docker_root).as_posix() for p in _modules(docker_root).rglob("*.ko*")}
    assert modules and set(modules) <= in_root
    assert not [name for name in modules if "/infiniband/" in name or "/nvme/target/" in name]
    assert {"nvme_tcp", "nvme_fabrics", "virtio_blk", "hv_storvsc"} <= initrd.kernel_modules(archive)
