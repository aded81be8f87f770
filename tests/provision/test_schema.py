"""The host declaration's schema: cloud-config and berth documents, strict, pure."""

from __future__ import annotations

import pytest

from cli.errors import UserError
from updater.provision.schema import (
    Container,
    MetaData,
    Port,
    Volume,
    declare,
    parse_document,
    parse_user_data,
)

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherOtherOtherOtherOtherOtherOtherOther me@laptop"
KEY2 = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC0 second@laptop"

CLOUD_CONFIG = f"""#cloud-config
hostname: Web-1
ssh_authorized_keys:
  - {KEY}
users:
  - name: admin
    ssh_authorized_keys: ["{KEY2}"]
berth:
  agent:
    group: canary
    server_url: http://fleet.example:8080
    poll_interval_s: 60
  containers:
    - name: web
      image: localhost/berth-busybox:latest
      archive: busybox.tar
      command: [httpd, -f, -p, "8080"]
      env: {{GREETING: hello, COUNT: 3}}
      ports: ["8080:8080", "5353:53/udp"]
      volumes: ["/var/lib/web:/srv:ro"]
      restart: on-failure
"""


def test_cloud_config_takes_what_users_write_plus_berth() -> None:
    config = parse_user_data(CLOUD_CONFIG.encode(), "user-data")
    assert config.hostname == "web-1"
    assert config.ssh_authorized_keys == (KEY, KEY2)
    assert config.agent == {"group": "canary", "server_url": "http://fleet.example:8080", "poll_interval_s": 60}
    assert config.containers == (Container(
        name="web", image="localhost/berth-busybox:latest", archive="busybox.tar",
        command=("httpd", "-f", "-p", "8080"), env=(("GREETING", "hello"), ("COUNT", "3")),
        ports=(Port(8080, 8080), Port(5353, 53, "udp")), volumes=(Volume("/var/lib/web", "/srv", True),),
        restart="on-failure"),)
    # What is kept on /var parses back to the same declaration.
    assert parse_document(config.document(), "kept") == config


def test_a_berth_document_and_empty_user_data() -> None:
    config = parse_user_data(b"hostname: plain\ncontainers: []\n", "credential")
    assert config.hostname == "plain" and config.containers == ()
    assert parse_user_data(b"", "x") == parse_user_data(b"#cloud-config\n", "x") == parse_document(None, "x")


def test_metadata_fills_what_user_data_leaves_out() -> None:
    meta = MetaData("i-1", "ip-10-0-0-1.ec2.internal", (KEY,))
    config = declare(meta, f"#cloud-config\nssh_authorized_keys: ['{KEY}', '{KEY2}']\n".encode(), "ec2")
    assert config.hostname == "ip-10-0-0-1" and config.ssh_authorized_keys == (KEY, KEY2)
    assert declare(meta, b"hostname: mine\n", "ec2").hostname == "mine"
    assert declare(MetaData(hostname="h" * 40 + ".example." + "d" * 30), None, "gce").hostname == "h" * 40
    assert declare(MetaData(hostname="not_a_name"), None, "gce").hostname == ""


@pytest.mark.parametrize("text, message", [
    ("#cloud-config\nruncmd: [reboot]\n", "user-data: unknown key 'runcmd'"),
    ("#cloud-config\nusers: [{name: a, sudo: ALL}]\n", "user-data.users[0]: unknown key 'sudo'"),
    ("colour: blue\n", "user-data: unknown key 'colour'"),
    ("agent: {colour: blue}\n", "user-data.agent: unknown setting 'colour'"),
    ("agent: {poll_interval_s: soon}\n", "setting 'poll_interval_s' must be int"),
    ("agent: {boot_tries: 12}\n", "'boot_tries': must be 1 to 9"),
    ("agent: {state_dir: /tmp}\n", "'state_dir' is the image's to set"),
    ("hostname: [a]\n", "user-data.hostname: must be a string, got list"),
    ("hostname: no_underscores\n", "user-data.hostname: not a host name"),
    ("ssh_authorized_keys: [hello]\n", "user-data.ssh_authorized_keys[0]: not one OpenSSH public key line"),
    ("containers: [{name: a}]\n", "user-data.containers[0]: 'image' is required"),
    ("containers: [{name: a, image: b, restrat: always}]\n", "user-data.containers[0]: unknown key 'restrat'"),
    ("containers: [{name: a, image: b, ports: [80]}]\n", "containers[0].ports[0]: must be a string, got int"),
    ("containers: [{name: a, image: b, ports: ['80']}]\n", "containers[0].ports[0]: expected 'HOST:CONTAINER'"),
    ("containers: [{name: a, image: b, volumes: ['/etc:/etc']}]\n", "the host side must be under /var"),
    ("containers: [{name: a, image: b, volumes: ['/var/../etc:/x']}]\n", "the host side must be under /var"),
    ("containers: [{name: a, image: b, restart: sometimes}]\n", "containers[0].restart: one of always"),
    ("containers: [{name: a, image: b, command: ls -l}]\n", "containers[0].command: must be a list of strings"),
    ("containers: [{name: a, image: b, env: {A: [1]}}]\n", "containers[0].env.A: must be a string or number"),
    ("containers: [{name: a, image: b, archive: ../x.tar}]\n", "containers[0].archive: a file name"),
    ("containers: [{name: a, image: b, archive: 'http://h/x.tar'}]\n", "ending in #sha256=<64 hex digits>"),
    ("containers: [{name: a, image: b, archive: 'ftp://h/x.tar#sha256=" + "a" * 64 + "'}]\n", "archive: a file name"),
    ("containers: [{name: a, image: b}, {name: a, image: c}]\n", "the name 'a' is declared twice"),
    ("tuf_root: '{nope'\n", "user-data.tuf_root: not JSON"),
    ("server_ca: hello\n", "user-data.server_ca: not a PEM certificate"),
    ("hostname: [\n", "user-data: not valid YAML"),
    ("#!/bin/sh\necho hi\n", "neither #cloud-config nor a berth document"),
    ("#cloud-config\nhostname: a\nberth: {hostname: b}\n", "two host names"),
    ("hooks: {pre-boot: {}}\n", "user-data.hooks: unknown key 'pre-boot'"),
    ("hooks: {pre-reboot: [a]}\n", "user-data.hooks.pre-reboot: must be a mapping of name: script"),
    ("hooks: {pre-reboot: {../x: '#!/bin/sh'}}\n", "user-data.hooks.pre-reboot.../x: a hook's name is"),
    ("hooks: {pre-reboot: {.hidden: '#!/bin/sh'}}\n", "a hook's name is"),
    ("hooks: {post-bless: {10-up: 'echo up'}}\n", "user-data.hooks.post-bless.10-up: must start with a #! line"),
    ("hooks: {post-bless: {10-up: 3}}\n", "user-data.hooks.post-bless.10-up: must be a string"),
])
def test_bad_declarations_are_refused_naming_the_key(text: str, message: str) -> None:
    with pytest.raises(UserError, match=None) as error:
        parse_user_data(text.encode(), "user-data")
    assert message in str(error.value)


def test_binary_user_data_is_refused() -> None:
    with pytest.raises(UserError, match="not UTF-8"):
        parse_user_data(b"\x1f\x8b\x08\x00\xff", "user-data")


def test_reboot_hooks_are_declared_by_stage_and_name_and_kept_whole() -> None:
    text = (b"#cloud-config\nberth:\n  hooks:\n    pre-reboot:\n      10-drain: |\n        #!/bin/sh\n"
            b"        kubectl drain $(hostname)\n    post-bless:\n      10-up: \"#!/bin/sh\\nkubectl uncordon x\\n\"\n")
    config = parse_user_data(text, "user-data")
    assert [(h.stage, h.name, h.script) for h in config.hooks] == [
        ("pre-reboot", "10-drain", "#!/bin/sh\nkubectl drain $(hostname)\n"),
        ("post-bless", "10-up", "#!/bin/sh\nkubectl uncordon x\n")]
    assert parse_document(config.document(), "kept") == config
    assert declare(MetaData(), text, "user-data").hooks == config.hooks
    # A declaration without hooks keeps the document the previous release wrote (and reads).
    assert "hooks" not in parse_document({}, "kept").document()


def test_an_archive_by_url_is_kept_under_its_digest() -> None:
    digest = "ab" * 32
    config = parse_user_data(
        f"containers: [{{name: a, image: b, archive: 'https://bucket.example/x.tar#sha256={digest}'}}]\n".encode(),
        "user-data")
    (container,) = config.containers
    assert (container.archive_sha256, container.archive_file) == (digest, f"sha256-{digest}.tar")
    assert parse_document(config.document(), "kept") == config  # the kept declaration reads back the same
