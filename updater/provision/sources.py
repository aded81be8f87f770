"""Where a host's declaration comes from: thin fetchers, tried in a fixed order.

1. the systemd credential ``berth.user_data`` (SMBIOS, /etc/credstore, …);
2. a config volume: NoCloud (label ``cidata``) or an OpenStack config drive
   (label ``config-2``), an ISO 9660 image read in place;
3. EC2 IMDSv2, GCE, Azure IMDS, OpenStack's metadata service, each only on a
   machine whose DMI says it could be that cloud (metadata.plausible_clouds).

The first source found gives the declaration. Each has a bounded wait: the
volume ``VOLUME_WAIT_S`` for udev to show its label, a metadata service
``NETWORK_WAIT_S`` in all, retried while the network comes up. No source:
None, and the host keeps its defaults (and its last good declaration).
"""

from __future__ import annotations

import base64
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cli.errors import UserError
from updater.provision import metadata
from updater.provision.iso9660 import IsoImage, NotIso
from updater.provision.schema import MetaData

USER_DATA_CREDENTIAL = "berth.user_data"
VOLUME_LABELS = (("cidata", "nocloud"), ("CIDATA", "nocloud"), ("config-2", "config-drive"),
                 ("CONFIG-2", "config-drive"))
VOLUME_WAIT_S = 2.0
NETWORK_WAIT_S = 30.0
REQUEST_TIMEOUT_S = 2.0
EC2_TOKEN_TTL_S = "300"


@dataclass(frozen=True)
class Endpoints:
    """The link-local services; tests point them at fakes on 127.0.0.1."""

    metadata: str = "http://169.254.169.254"
    azure_wire: str = "http://168.63.129.16"


@dataclass(frozen=True)
class Found:
    source: str  # credential, nocloud, config-drive, ec2, gce, azure, openstack
    meta: MetaData
    user_data: bytes | None
    volume: Path | None = None  # the config volume, for archives it holds


class NotHere(Exception):
    """This source answers nothing here (no such service, 404 for the index)."""


def from_credentials(credentials_dir: Path | None) -> Found | None:
    if credentials_dir is None:
        return None
    path = credentials_dir / USER_DATA_CREDENTIAL
    return Found("credential", MetaData(), path.read_bytes()) if path.is_file() else None


def read_volume(device: Path, source: str) -> Found:
    with device.open("rb") as handle:
        try:
            iso = IsoImage(handle)
        except NotIso as error:
            raise UserError(f"{source} volume {device}: not ISO 9660 ({error}); vfat seeds are not read") from None
        if source == "nocloud":
            return Found(source, metadata.nocloud(iso.read("meta-data")), iso.read("user-data"), device)
        meta_json = iso.read("openstack/latest/meta_data.json")
        if meta_json is None:
            raise UserError(f"config drive {device}: no openstack/latest/meta_data.json")
        return Found(source, metadata.openstack(meta_json), iso.read("openstack/latest/user_data"), device)


def from_volume(by_label: Path = Path("/dev/disk/by-label"), wait_s: float = VOLUME_WAIT_S) -> Found | None:
    deadline = time.monotonic() + wait_s
    while True:
        for label, source in VOLUME_LABELS:
            if (by_label / label).exists():
                return read_volume(by_label / label, source)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.2)


Fetch = Callable[[str, str, Mapping[str, str]], bytes | None]


def http(method: str, url: str, headers: Mapping[str, str], timeout: float = REQUEST_TIMEOUT_S) -> bytes | None:
    """One request; the body, or None for a 404 (an optional item that is not set)."""
    request = urllib.request.Request(url, method=method, headers=dict(headers),
                                     data=b"" if method in ("PUT", "POST") else None)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return bytes(response.read())
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise UserError(f"{method} {url}: HTTP {error.code}") from None


def _text(body: bytes | None) -> str:
    return (body or b"").decode("utf-8", "replace")


def ec2(base: str) -> Found:
    """IMDSv2: a session token by PUT first, then every GET carries it."""
    token = http("PUT", f"{base}/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": EC2_TOKEN_TTL_S})
    if not token:
        raise NotHere("no IMDSv2 token")
    headers = {"X-aws-ec2-metadata-token": token.decode()}

    def get(path: str) -> bytes | None:
        return http("GET", f"{base}/latest/{path}", headers)

    keys = [_text(get(f"meta-data/public-keys/{index}/openssh-key"))
            for index in metadata.ec2_key_indexes(_text(get("meta-data/public-keys/")))]
    meta = metadata.ec2(_text(get("meta-data/instance-id")), _text(get("meta-data/local-hostname")), keys)
    return Found("ec2", meta, get("user-data"))


def gce(base: str) -> Found:
    """GCE: every request says ``Metadata-Flavor: Google`` (and so must the answer)."""
    headers = {"Metadata-Flavor": "Google"}
    request = urllib.request.Request(f"{base}/computeMetadata/v1/instance/id", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
            if response.headers.get("Metadata-Flavor") != "Google":
                raise NotHere("the answer has no Metadata-Flavor: Google")
            instance_id = _text(response.read())
    except urllib.error.HTTPError as error:
        raise NotHere(f"GCE instance/id: HTTP {error.code}") from None

    def get(path: str) -> bytes | None:
        return http("GET", f"{base}/computeMetadata/v1/instance/{path}", headers)

    meta = metadata.gce(instance_id, _text(get("hostname")), _text(get("attributes/ssh-keys")))
    return Found("gce", meta, get("attributes/user-data"))


def azure(base: str) -> Found:
    """Azure IMDS: ``Metadata: true`` on every request; user-data comes base64."""
    headers = {"Metadata": "true"}
    instance = http("GET", f"{base}/metadata/instance?api-version=2021-02-01", headers)
    if instance is None:
        raise NotHere("no IMDS instance document")
    encoded = http("GET", f"{base}/metadata/instance/compute/userData?api-version=2021-01-01&format=text", headers)
    try:
        user_data = base64.b64decode(encoded or b"", validate=True) or None
    except ValueError:
        raise UserError("azure IMDS: userData is not base64") from None
    return Found("azure", metadata.azure(instance), user_data)


def azure_report_ready(wire: str) -> None:
    """Tell the wire server the VM is up; without it Azure marks the VM failed."""
    headers = {"x-ms-version": "2012-11-30", "x-ms-agent-name": "berth"}
    goal = http("GET", f"{wire}/machine/?comp=goalstate", headers)
    if goal is None:
        raise UserError("azure wire server: no goal state")
    report = metadata.azure_ready_report(*metadata.azure_goal_state(goal))
    request = urllib.request.Request(f"{wire}/machine/?comp=health", method="POST", data=report,
                                     headers={**headers, "Content-Type": "text/xml;charset=utf-8"})
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S):
            pass
    except urllib.error.HTTPError as error:
        raise UserError(f"azure wire server: the ready report got HTTP {error.code}") from None


def openstack(base: str) -> Found:
    meta_json = http("GET", f"{base}/openstack/latest/meta_data.json", {})
    if meta_json is None:
        raise NotHere("no openstack/latest/meta_data.json")
    return Found("openstack", metadata.openstack(meta_json), http("GET", f"{base}/openstack/latest/user_data", {}))


NETWORK_FETCHERS: dict[str, Callable[[str], Found]] = {
    "ec2": ec2, "gce": gce, "azure": azure, "openstack": openstack,
}


def from_network(name: str, base: str, wait_s: float = NETWORK_WAIT_S) -> Found | None:
    """One metadata service, retried on connection errors until the wait is up."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return NETWORK_FETCHERS[name](base)
        except NotHere:
            return None
        except (urllib.error.URLError, OSError, TimeoutError) as error:
            if time.monotonic() >= deadline:
                raise UserError(f"{name} metadata at {base}: no answer within {wait_s:.0f} s ({error})") from None
            time.sleep(1.0)


def dmi(directory: Path = Path("/sys/class/dmi/id")) -> dict[str, str]:
    values = {}
    for name in ("sys_vendor", "product_name", "product_uuid", "chassis_asset_tag"):
        try:
            values[name] = (directory / name).read_text().strip()
        except OSError:
            pass  # product_uuid is root-only; absent fields simply do not match
    return values


def gather(credentials_dir: Path | None, by_label: Path, dmi_facts: Mapping[str, str],
           endpoints: Endpoints, log: Callable[[str], None], volume_wait_s: float = VOLUME_WAIT_S) -> Found | None:
    """The first source that answers, in berth's order; errors of one source are
    logged and the next is tried."""
    found = from_credentials(credentials_dir)
    if found is not None:
        return found
    try:
        found = from_volume(by_label, volume_wait_s)
    except (UserError, OSError) as error:
        log(f"config volume: {error}")
    if found is not None:
        return found
    for name in metadata.plausible_clouds(dmi_facts):
        try:
            found = from_network(name, endpoints.metadata)
        except UserError as error:
            log(str(error))
            continue
        if found is not None:
            return found
    return None


def describe(found: Found) -> str:
    where = f" ({found.volume})" if found.volume else ""
    return f"{found.source}{where}, instance {found.meta.instance_id or '-'}"
