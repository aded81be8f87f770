"""The sources, each against its fake (tests/provision/fake_clouds.py) or a real seed ISO."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import pytest

from cli.errors import UserError
from tests.provision.conftest import SeedMaker, config_drive
from tests.provision.fake_clouds import EC2_SERVER, KEY, Cloud, serve
from updater.provision import sources
from updater.provision.iso9660 import IsoImage
from updater.provision.metadata import AZURE_ASSET_TAG, azure_goal_state, plausible_clouds
from updater.provision.schema import declare

USER_DATA = b"#cloud-config\nhostname: from-cloud\nberth: {agent: {group: web}}\n"


def test_each_provider_through_its_fake() -> None:
    for provider in ("ec2", "gce", "azure", "openstack"):
        cloud = Cloud(USER_DATA, instance_id=f"{provider}-instance")
        with serve(provider, cloud) as base:
            found = sources.from_network(provider, base, wait_s=2)
        assert found is not None and found.source == provider
        assert found.meta.instance_id == f"{provider}-instance" and found.meta.ssh_authorized_keys == (KEY,)
        assert found.user_data == USER_DATA, provider
        config = declare(found.meta, found.user_data, provider)
        assert (config.hostname, config.agent, config.ssh_authorized_keys) == ("from-cloud", {"group": "web"}, (KEY,))
        assert cloud.refused == [], f"{provider}: berth broke the provider's rules: {cloud.refused}"


def test_no_user_data_gives_the_instance_name_and_keys() -> None:
    for provider in ("ec2", "gce", "azure", "openstack"):
        with serve(provider, Cloud(None)) as base:
            found = sources.from_network(provider, base, wait_s=2)
        assert found is not None and not found.user_data
        assert declare(found.meta, found.user_data, provider).hostname == "fake-host", provider


@pytest.mark.parametrize("provider, path, headers, code", [
    ("ec2", "/latest/user-data", {}, 401),  # IMDSv2: no token, no answer
    ("ec2", "/latest/user-data", {"X-aws-ec2-metadata-token": "guessed"}, 401),
    ("gce", "/computeMetadata/v1/instance/id", {}, 403),
    ("gce", "/computeMetadata/v1/instance/id", {"Metadata-Flavor": "Google", "X-Forwarded-For": "1.2.3.4"}, 403),
    ("azure", "/metadata/instance?api-version=2021-02-01", {}, 400),
    ("azure", "/metadata/instance", {"Metadata": "true"}, 400),
    ("azure", "/machine/?comp=goalstate", {}, 400),
])
def test_the_fakes_enforce_their_rules(provider: str, path: str, headers: dict[str, str], code: int) -> None:
    with serve(provider, Cloud(USER_DATA)) as base, pytest.raises(UserError, match=f"HTTP {code}"):
        sources.http("GET", base + path, headers)


def test_ec2_token_needs_its_ttl_header() -> None:
    with serve("ec2", Cloud(USER_DATA)) as base:
        for ttl in (None, "0", "21601", "sixty"):  # AWS: 1 to 21600 seconds, else 400
            with pytest.raises(UserError, match="HTTP 400"):
                sources.http("PUT", f"{base}/latest/api/token",
                             {} if ttl is None else {"X-aws-ec2-metadata-token-ttl-seconds": ttl})
        with pytest.raises(UserError, match="HTTP 403"):  # a proxied token request
            sources.http("PUT", f"{base}/latest/api/token",
                         {"X-aws-ec2-metadata-token-ttl-seconds": "60", "X-Forwarded-For": "10.0.0.1"})
        token = sources.http("PUT", f"{base}/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "60"})
        assert token
        request = urllib.request.Request(f"{base}/latest/meta-data/instance-id",
                                         headers={"X-aws-ec2-metadata-token": token.decode()})
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert answer.read() == b"i-0fake"
            # the token's remaining TTL, and a fake that says it is one
            assert 0 < int(answer.headers["X-aws-ec2-metadata-token-ttl-seconds"]) <= 60
            assert answer.headers["Server"] == EC2_SERVER


def test_ec2_token_expires_after_its_ttl() -> None:
    with serve("ec2", Cloud(USER_DATA)) as base:
        token = sources.http("PUT", f"{base}/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "1"})
        assert token
        time.sleep(1.1)
        with pytest.raises(UserError, match="HTTP 401"):
            sources.http("GET", f"{base}/latest/user-data", {"X-aws-ec2-metadata-token": token.decode()})


def test_berth_asks_ec2_for_its_token_before_anything_else() -> None:
    cloud = Cloud(USER_DATA)
    with serve("ec2", cloud) as base:
        sources.from_network("ec2", base, wait_s=2)
    assert cloud.requests[0] == "PUT /latest/api/token"
    assert len(cloud.requests) > 1 and all(r.startswith("GET ") for r in cloud.requests[1:])


def test_azure_ready_report_reaches_the_wire_server() -> None:
    cloud = Cloud(USER_DATA, instance_id="vm-7")
    with serve("azure", cloud) as base:
        sources.azure_report_ready(base)
    assert len(cloud.health_reports) == 1
    report = cloud.health_reports[0]
    assert b"<State>Ready</State>" in report and b"<ContainerId>c0ffee00-fake</ContainerId>" in report
    assert b"<InstanceId>vm-7.0</InstanceId>" in report and b"<GoalStateIncarnation>7<" in report


def test_goal_state_without_ids_is_refused() -> None:
    with pytest.raises(UserError, match="no ContainerId"):
        azure_goal_state(b"<GoalState><Incarnation>1</Incarnation></GoalState>")


def test_a_silent_metadata_address_is_a_bounded_wait() -> None:
    with serve("ec2", Cloud(None)) as base:
        dead = base  # the port closes when the fake stops
    with pytest.raises(UserError, match="no answer within 1 s"):
        sources.from_network("ec2", dead, wait_s=1)


def test_platform_decides_which_networks_are_asked() -> None:
    assert plausible_clouds({"sys_vendor": "QEMU", "product_name": "Standard PC (Q35 + ICH9, 2009)"}) == ()
    assert plausible_clouds({"sys_vendor": "Amazon EC2"}) == ("ec2",)
    assert plausible_clouds({"product_name": "Google Compute Engine"}) == ("gce",)
    assert plausible_clouds({"chassis_asset_tag": AZURE_ASSET_TAG}) == ("azure",)
    assert plausible_clouds({"product_name": "OpenStack Nova"}) == ("openstack",)


def test_order_credential_then_volume_then_network(tmp_path: Path, make_seed: SeedMaker) -> None:
    by_label, creds = tmp_path / "by-label", tmp_path / "creds"
    by_label.mkdir()
    creds.mkdir()
    seed = make_seed("hostname: from-seed\n")
    errors: list[str] = []
    with serve("ec2", Cloud(USER_DATA)) as base:
        endpoints = sources.Endpoints(metadata=base)
        ec2 = {"sys_vendor": "Amazon EC2"}

        def gather() -> sources.Found | None:
            return sources.gather(creds, by_label, ec2, endpoints, errors.append, volume_wait_s=0)

        assert (found := gather()) is not None and found.source == "ec2"
        (by_label / "cidata").symlink_to(seed)
        assert (found := gather()) is not None and found.source == "nocloud" and found.volume == by_label / "cidata"
        assert found.meta.instance_id == "iid-seed-1" and found.user_data == b"hostname: from-seed\n"
        (creds / "berth.user_data").write_text("hostname: from-credential\n")
        assert (found := gather()) is not None and found.source == "credential"
        assert sources.gather(None, tmp_path / "none", {"sys_vendor": "QEMU"}, endpoints, errors.append, 0.2) is None
    assert errors == []


def test_config_drive_and_a_volume_that_is_not_iso(tmp_path: Path) -> None:
    by_label = tmp_path / "by-label"
    by_label.mkdir()
    drive = config_drive(tmp_path / "cd.iso", '{"uuid": "os-1", "hostname": "n1.novalocal", "public_keys": {}}',
                         "hostname: drive\n")
    (by_label / "config-2").symlink_to(drive)
    found = sources.from_volume(by_label, wait_s=0)
    assert found is not None and (found.source, found.meta.instance_id, found.user_data) == (
        "config-drive", "os-1", b"hostname: drive\n")
    (by_label / "config-2").unlink()
    (by_label / "cidata").symlink_to(tmp_path / "junk")
    (tmp_path / "junk").write_bytes(b"\0" * 65536)
    with pytest.raises(UserError, match="not ISO 9660"):
        sources.from_volume(by_label, wait_s=0)


def test_iso_reader_names_and_nesting(make_seed: SeedMaker) -> None:
    seed = make_seed("x: 1\n", extra={"busybox.tar": b"B" * 5000})
    with seed.open("rb") as handle:
        iso = IsoImage(handle)
        assert iso.label == "cidata"
        assert sorted(iso.files) == ["busybox.tar", "meta-data", "user-data"]
        assert iso.read("busybox.tar") == b"B" * 5000 and iso.read("absent") is None
