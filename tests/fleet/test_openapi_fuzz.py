"""The published OpenAPI schema, fuzzed with schemathesis against a real server: never a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

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
def test_no_request_the_schema_allows_makes_the_server_fail(case: schemathesis.Case) -> None:
    for headers in ({}, {"Authorization": f"Bearer {ADMIN}"}):
        response = case.call(headers=headers, timeout=30)
        case.validate_response(response, checks=(not_a_server_error,))
