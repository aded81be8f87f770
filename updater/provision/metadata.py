"""Each source's own formats, turned into berth's MetaData (pure: no I/O).

Written from the providers' documentation: NoCloud's ``meta-data`` (YAML),
OpenStack's ``meta_data.json`` (config drive and metadata service alike),
EC2's ``public-keys/`` listing, GCE's ``ssh-keys`` attribute (``user:key``
lines), Azure IMDS's instance document and the wire server's goal state and
health report (the "ready" Azure waits for before it calls a VM provisioned).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from xml.etree import ElementTree

import yaml

from cli.errors import UserError
from updater.provision.schema import MetaData

# The DMI facts each cloud's VMs show (what cloud-init's ds-identify reads too):
# a network source is asked only on a platform that could be it, so a host in
# QEMU or on bare metal never waits on 169.254.169.254.
AZURE_ASSET_TAG = "7783-7084-3265-9085-8269-3286-77"
NETWORK_SOURCES = ("ec2", "gce", "azure", "openstack")

_KEY_LINE = re.compile(r"(ssh-|ecdsa-|sk-)\S+\s+\S+")


def plausible_clouds(dmi: Mapping[str, str]) -> tuple[str, ...]:
    """The network sources worth asking on this machine, in berth's order."""
    vendor = dmi.get("sys_vendor", "").strip()
    product = dmi.get("product_name", "").strip()
    checks = {
        "ec2": vendor == "Amazon EC2" or dmi.get("product_uuid", "").lower().startswith("ec2"),
        "gce": product == "Google Compute Engine" or vendor == "Google",
        "azure": dmi.get("chassis_asset_tag", "").strip() == AZURE_ASSET_TAG,
        "openstack": product in ("OpenStack Nova", "OpenStack Compute")
        or dmi.get("chassis_asset_tag", "").strip() == "OpenStack Nova",
    }
    return tuple(name for name in NETWORK_SOURCES if checks[name])


def _keys(lines: list[str]) -> tuple[str, ...]:
    return tuple(line.strip() for line in lines if _KEY_LINE.match(line.strip()))


def nocloud(meta_data: bytes | None) -> MetaData:
    """NoCloud ``meta-data``: instance-id, local-hostname, public-keys."""
    if not meta_data:
        return MetaData()
    try:
        data = yaml.safe_load(meta_data.decode("utf-8", "replace")) or {}
    except yaml.YAMLError as error:
        raise UserError(f"meta-data: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError("meta-data: must be a mapping")
    keys = data.get("public-keys", [])
    keys = [keys] if isinstance(keys, str) else keys if isinstance(keys, list) else []
    return MetaData(str(data.get("instance-id", "")), str(data.get("local-hostname", "")),
                    _keys([str(k) for k in keys]))


def openstack(meta_data_json: bytes) -> MetaData:
    """OpenStack ``openstack/latest/meta_data.json``: uuid, hostname, public_keys {name: key}."""
    try:
        data = json.loads(meta_data_json)
    except json.JSONDecodeError:
        raise UserError("openstack meta_data.json: not JSON") from None
    keys = data.get("public_keys", {}) if isinstance(data, dict) else {}
    return MetaData(str(data.get("uuid", "")), str(data.get("hostname", "")),
                    _keys([str(k) for k in keys.values()] if isinstance(keys, dict) else []))


def ec2(instance_id: str, hostname: str, keys: list[str]) -> MetaData:
    return MetaData(instance_id.strip(), hostname.strip(), _keys(keys))


def ec2_key_indexes(listing: str) -> list[str]:
    """``public-keys/`` lists ``0=name`` lines; the key is at ``public-keys/0/openssh-key``."""
    return [line.split("=", 1)[0] for line in listing.splitlines() if "=" in line]


def gce(instance_id: str, hostname: str, ssh_keys: str) -> MetaData:
    """GCE's ``ssh-keys`` attribute: ``USER:KEY`` per line; berth's one account is root."""
    return MetaData(instance_id.strip(), hostname.strip(),
                    _keys([line.split(":", 1)[1] for line in ssh_keys.splitlines() if ":" in line]))


def azure(instance: bytes) -> MetaData:
    """IMDS ``/metadata/instance``: compute.vmId, osProfile.computerName, publicKeys[].keyData."""
    try:
        compute: dict[str, Any] = json.loads(instance)["compute"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise UserError("azure IMDS: no compute section in the instance document") from None
    keys = [str(k.get("keyData", "")) for k in compute.get("publicKeys", []) if isinstance(k, dict)]
    return MetaData(str(compute.get("vmId", "")),
                    str(compute.get("osProfile", {}).get("computerName", "") or compute.get("name", "")),
                    _keys(keys))


def azure_goal_state(xml: bytes) -> tuple[str, str, str]:
    """The wire server's goal state: (incarnation, container id, role instance id)."""
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        raise UserError("azure wire server: the goal state is not XML") from None
    incarnation = root.findtext("Incarnation") or "1"
    container = root.findtext("Container/ContainerId")
    instance = root.findtext("Container/RoleInstanceList/RoleInstance/InstanceId")
    if not container or not instance:
        raise UserError("azure wire server: no ContainerId/InstanceId in the goal state")
    return incarnation, container, instance


def azure_ready_report(incarnation: str, container_id: str, instance_id: str) -> bytes:
    """The health report that tells Azure the VM is provisioned (State Ready)."""
    health = ElementTree.Element("Health")
    ElementTree.SubElement(health, "GoalStateIncarnation").text = incarnation
    container = ElementTree.SubElement(health, "Container")
    ElementTree.SubElement(container, "ContainerId").text = container_id
    role = ElementTree.SubElement(ElementTree.SubElement(container, "RoleInstanceList"), "Role")
    ElementTree.SubElement(role, "InstanceId").text = instance_id
    ElementTree.SubElement(ElementTree.SubElement(role, "Health"), "State").text = "Ready"
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + ElementTree.tostring(health)
