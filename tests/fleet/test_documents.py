"""The admin documents and the schemas generated from them (updater.fleet.documents)."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from schemathesis.specs.openapi.converter import to_json_schema_recursive

from updater.fleet import documents as doc
from updater.fleet.hoststate import HostState
from updater.fleet.locks import LockOutcome
from updater.fleet.openapi import openapi_schema
from updater.fleet.policy import ReleaseState


def _json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    return to_json_schema_recursive(schema, "nullable")  # type: ignore[no-any-return]


SAMPLES: list[doc.Document] = [
    doc.Status(
        10.0,
        {"g": doc.GroupStatus({"idle": 1}, {"1.0.0": 1}, ["a"], 1, 0, 2,
                              [doc.RolloutStatus("1.1.0", 1.0, None, None, 50.0)])},
        [doc.ReleaseStatus("berth", "1.1.0", ReleaseState.PAUSED)],
        [doc.CatalogEntry("berth", "1.1.0", False)],
    ),
    doc.HostHistory("a", None, [doc.ReportRecord(1, 2.0, "g", "staged", "1.1.0", "1.0.0", "")],  # type: ignore[arg-type]
                    [doc.HostEvent(1.0, "enrolled", "in group g")],
                    [doc.TransferRecord(1, "1.1.0", "delta", 5_000, 200_000)]),
    doc.Timeline("1.1.0", [doc.TimelineEvent(1.0, "g", "blessed")]),  # type: ignore[arg-type]
    doc.LockLog("g", 2, [doc.LockLogEvent(1.0, "a", "granted")]),  # type: ignore[arg-type]
    doc.UpdateLog("g", doc.Rate(2, 3600.0), [doc.CountedUpdate("a", "1.1.0", 1.0, None, None),
                                              doc.CountedUpdate("b", "1.1.0", 1.0, 2.0, "rolled_back_unexplained")]),
    doc.ReleaseStatus("berth", "1.1.0", ReleaseState.ACTIVE),
    doc.Reloaded(["g"], ["1.1.0"]),
    doc.HostMoved("a", "g", "h"),
    doc.HostForgotten("a", "g", True),
    doc.ReportAccepted(True, HostState.STAGED),
    doc.LockAnswer(LockOutcome.ACQUIRED),
]


@pytest.mark.parametrize("document", SAMPLES, ids=lambda d: type(d).__name__)
def test_each_document_meets_its_own_schema_and_nothing_more(document: doc.Document) -> None:
    schema = _json_schema(doc.schema_of(type(document)))
    body = document.to_json()
    jsonschema.validate(body, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**body, "surprise": 1}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({k: v for k, v in list(body.items())[1:]}, schema)


def test_every_admin_answer_in_the_published_schema_is_a_generated_document() -> None:
    paths = openapi_schema()["paths"]
    generated = {id(doc.schema_of(type(d))) for d in SAMPLES}
    for path, item in paths.items():
        if not path.startswith("/admin/"):
            continue
        for operation in item.values():
            ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
            assert id(ok) in generated, path


def test_a_type_without_a_schema_is_refused() -> None:
    with pytest.raises(TypeError):
        doc._schema_of_type(bytes)


@pytest.mark.parametrize("document", SAMPLES, ids=lambda d: type(d).__name__)
def test_a_reader_reads_back_what_the_server_wrote(document: doc.Document) -> None:
    body = json.loads(json.dumps(document.to_json()))  # as it travels
    assert type(document).from_json(body) == document


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"group": "g", "max_concurrent_reboots": 1}, "LockLog: missing events"),
        ({"group": "g", "max_concurrent_reboots": "1", "events": []}, "max_concurrent_reboots: expected int"),
        ({"group": "g", "max_concurrent_reboots": True, "events": []}, "expected int"),
        ({"group": "g", "max_concurrent_reboots": 1, "events": {}}, "events: expected a list"),
        ({"group": "g", "max_concurrent_reboots": 1, "events": [{"at": 1, "node_id": "a", "event": "stolen"}]},
         r"events\[0\].event: 'stolen' is not one of"),
        ([], "LockLog: expected an object"),
    ],
)
def test_a_document_of_another_shape_is_refused_naming_the_field(body: Any, message: str) -> None:
    with pytest.raises(doc.DocumentError, match=message):
        doc.LockLog.from_json(body)
