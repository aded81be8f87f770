"""FAKE cloud metadata services, for tests only: no cloud can be reached from here.

Each is written from its provider's documented API and enforces that API's
rules, so a client that forgets them is refused as the real service would:
- EC2 IMDSv2 (instance metadata options ``HttpTokens=required``): ``PUT
  /latest/api/token`` with ``X-aws-ec2-metadata-token-ttl-seconds`` between 1 and
  21600 gives a fresh token (a missing or out-of-range TTL: 400; a PUT carrying
  ``X-Forwarded-For``: 403, as AWS refuses proxied token requests); a GET without a
  live token (none, unknown, expired) gets 401; a GET answers with the token's
  remaining TTL in ``X-aws-ec2-metadata-token-ttl-seconds``. Every answer carries
  ``Server: berth-FAKE-ec2-imds`` so nobody mistakes it for AWS.
- GCE: requests need ``Metadata-Flavor: Google`` (else 403), and carrying
  ``X-Forwarded-For`` is refused; answers carry ``Metadata-Flavor: Google``.
- Azure IMDS: requests need ``Metadata: true`` (else 400) and an ``api-version``;
  the wire server needs ``x-ms-version`` and records the health reports posted.
- OpenStack: no header rules (the metadata service has none).
They bind 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFakeFakeFakeFakeFakeFake fake@cloud"
EC2_TTL_RANGE = range(1, 21600 + 1)  # seconds, as AWS documents the TTL header
EC2_SERVER = "berth-FAKE-ec2-imds"


class Cloud:
    """What a fake cloud says about its one instance, and what it was told."""

    def __init__(self, user_data: bytes | None, instance_id: str = "i-0fake", hostname: str = "fake-host") -> None:
        self.user_data = user_data
        self.instance_id = instance_id
        self.hostname = hostname
        self.health_reports: list[bytes] = []
        self.refused: list[str] = []
        self.requests: list[str] = []  # "METHOD path", in the order they came
        self.tokens: dict[str, float] = {}  # EC2 session token -> monotonic expiry


class _Handler(BaseHTTPRequestHandler):
    cloud: Cloud

    def log_message(self, format: str, *args: object) -> None:
        pass

    def answer(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        if code >= 400:
            self.cloud.refused.append(f"{self.command} {self.path} -> {code}")
        self.send_response(code)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))


class Ec2(_Handler):
    def version_string(self) -> str:  # the Server header of every answer
        return EC2_SERVER

    def do_PUT(self) -> None:
        self.cloud.requests.append(f"PUT {self.path}")
        self.body()
        if self.path != "/latest/api/token":
            return self.answer(404)
        if "X-Forwarded-For" in self.headers:
            return self.answer(403)
        ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
        if not ttl.isdigit() or int(ttl) not in EC2_TTL_RANGE:
            return self.answer(400)
        token = secrets.token_urlsafe(32)
        self.cloud.tokens[token] = time.monotonic() + int(ttl)
        self.answer(200, token.encode(), {"X-aws-ec2-metadata-token-ttl-seconds": ttl,
                                          "Content-Type": "text/plain"})

    def do_GET(self) -> None:
        self.cloud.requests.append(f"GET {self.path}")
        expiry = self.cloud.tokens.get(self.headers.get("X-aws-ec2-metadata-token", ""), 0.0)
        left = int(expiry - time.monotonic())
        if left <= 0:
            return self.answer(401)
        items = {
            "/latest/meta-data/instance-id": self.cloud.instance_id.encode(),
            "/latest/meta-data/local-hostname": f"{self.cloud.hostname}.ec2.internal".encode(),
            "/latest/meta-data/public-keys/": b"0=fake-key",
            "/latest/meta-data/public-keys/0/openssh-key": KEY.encode() + b"\n",
            "/latest/user-data": self.cloud.user_data,
        }
        value = items.get(self.path)
        ttl = {"X-aws-ec2-metadata-token-ttl-seconds": str(left)}
        self.answer(404, headers=ttl) if value is None else self.answer(200, value, ttl)


class Gce(_Handler):
    def do_GET(self) -> None:
        if self.headers.get("Metadata-Flavor") != "Google" or "X-Forwarded-For" in self.headers:
            return self.answer(403)
        prefix = "/computeMetadata/v1/instance/"
        items = {
            "id": self.cloud.instance_id.encode(),
            "hostname": f"{self.cloud.hostname}.c.project.internal".encode(),
            "attributes/ssh-keys": f"someone:{KEY}\n".encode(),
            "attributes/user-data": self.cloud.user_data,
        }
        value = items.get(self.path.removeprefix(prefix)) if self.path.startswith(prefix) else None
        if value is None:
            return self.answer(404, headers={"Metadata-Flavor": "Google"})
        self.answer(200, value, {"Metadata-Flavor": "Google", "Content-Type": "application/text"})


class Azure(_Handler):
    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path == "/machine/" and query.get("comp") == ["goalstate"]:
            if "x-ms-version" not in self.headers:
                return self.answer(400)
            return self.answer(200, (
                "<?xml version=\"1.0\" encoding=\"utf-8\"?><GoalState><Version>2012-11-30</Version>"
                "<Incarnation>7</Incarnation><Machine><ExpectedState>Started</ExpectedState></Machine>"
                "<Container><ContainerId>c0ffee00-fake</ContainerId><RoleInstanceList><RoleInstance>"
                f"<InstanceId>{self.cloud.instance_id}.0</InstanceId></RoleInstance></RoleInstanceList>"
                "</Container></GoalState>").encode(), {"Content-Type": "text/xml"})
        if self.headers.get("Metadata") != "true" or "X-Forwarded-For" in self.headers:
            return self.answer(400, b'{"error": "Bad request. Required metadata header not specified"}')
        if "api-version" not in query:
            return self.answer(400, b'{"error": "Bad request. api-version was not specified"}')
        if url.path == "/metadata/instance":
            document = {"compute": {"vmId": self.cloud.instance_id, "name": self.cloud.hostname,
                                    "osProfile": {"computerName": self.cloud.hostname},
                                    "publicKeys": [{"keyData": KEY, "path": "/home/azureuser/.ssh/authorized_keys"}]}}
            return self.answer(200, json.dumps(document).encode(), {"Content-Type": "application/json"})
        if url.path == "/metadata/instance/compute/userData":
            return self.answer(200, base64.b64encode(self.cloud.user_data or b""))
        self.answer(404)

    def do_POST(self) -> None:
        body = self.body()
        if urlsplit(self.path).query != "comp=health" or "x-ms-version" not in self.headers:
            return self.answer(400)
        self.cloud.health_reports.append(body)
        self.answer(200)


class OpenStack(_Handler):
    def do_GET(self) -> None:
        if self.path == "/openstack/latest/meta_data.json":
            document = {"uuid": self.cloud.instance_id, "hostname": f"{self.cloud.hostname}.novalocal",
                        "public_keys": {"fake-key": KEY}}
            return self.answer(200, json.dumps(document).encode())
        if self.path == "/openstack/latest/user_data" and self.cloud.user_data is not None:
            return self.answer(200, self.cloud.user_data)
        self.answer(404)


PROVIDERS: dict[str, type[_Handler]] = {"ec2": Ec2, "gce": Gce, "azure": Azure, "openstack": OpenStack}


@contextmanager
def serve(provider: str, cloud: Cloud, port: int = 0) -> Iterator[str]:
    """Run the provider's fake on 127.0.0.1 (any free port by default); yields its base URL."""
    handler = type(f"Fake{provider}", (PROVIDERS[provider],), {"cloud": cloud})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
