"""The published OpenAPI schema, fuzzed with schemathesis against a real server: never a
5xx, and every answer is one the schema promises (status code, content type, body)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from updater.fleet.launch import running_server, write_config
from updater.fleet.synthetic import synthetic_release, write_targets

ADMIN = "fuzz-admin"


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[schemathesis.BaseSchema]:
    workdir: Path = tmp_path_factory.mktemp("fuzz")
    write_targets(workdir / "repo", [synthetic_release("1.1.0"), synthetic_release("1.2.0")])
    config = write_config(
        workdir,
        {
            "repository": "repo",
            "admin_token": ADMIN,
            "groups": {
                "default": {"waves": [{"after": "0s", "percent": 100}]},
                "guarded": {"token": "t0ken", "max_concurrent_reboots": 2},
            },
        },
    )
    with running_server(config, f"sqlite:///{workdir / 'fleet.sqlite3'}") as server:
        yield schemathesis.from_uri(server.url + "/openapi.json", base_url=server.url)


schema = schemathesis.from_pytest_fixture("api_schema")


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_answer_is_one_the_schema_promises(case: schemathesis.Case) -> None:
    checks = (
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    )
    # The bearer token is always set here: one schemathesis makes up may hold bytes no
    # HTTP header can (the server's HTTP parser, not the API, refuses those).
    for token in ("wrong", ADMIN, "t0ken"):
        headers = {"Authorization": f"Bearer {token}"}
        response = case.call(headers=headers, timeout=30)
        case.validate_response(response, checks=checks)
