"""REST details as Confluent's registry answers them: normalize, the 409 details, checks
against unknown subjects, deletedOnly, schemas by id with a subject, READONLY_OVERRIDE."""

# ruff: noqa: E501 - request bodies are kept on one line each

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from schemas.registry import Registry
from schemas.server import create_app

AVRO = json.dumps({"type": "record", "name": "A", "fields": [{"name": "x", "type": "string"}]})
ADDRESS = 'syntax = "proto3";\npackage shop;\nmessage Address { string zip = 1; }\n'


@pytest.fixture
async def http(registry: Registry) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(registry))
    async with httpx.AsyncClient(transport=transport, base_url="http://registry") as client:
        yield client


async def post(http: httpx.AsyncClient, path: str, body: Any, **params: str) -> Any:
    response = await http.post(path, json=body, params=params)
    assert response.is_success, response.text
    return response.json()


# Each pair is one schema written two ways, neither in normal form, that only normalize=true
# merges.
EQUIVALENT = {
    "AVRO": (
        {"schema": json.dumps({"type": "record", "name": "A", "namespace": "n", "fields": [{"name": "x", "type": {"type": "string"}}]})},
        {"schema": json.dumps({"type": "record", "name": "n.A", "fields": [{"name": "x", "type": {"type": "string"}}]})},
    ),
    "JSON": (
        {"schemaType": "JSON", "schema": "{}", "references": [{"name": "b", "subject": "b", "version": 1}, {"name": "a", "subject": "a", "version": 1}]},
        {"schemaType": "JSON", "schema": "{}", "references": [{"name": "b", "subject": "b", "version": 1}, {"name": "a", "subject": "a", "version": 1}, {"name": "a", "subject": "a", "version": 1}]},
    ),
    "PROTOBUF": (
        {"schemaType": "PROTOBUF", "schema": 'syntax = "proto3";\nmessage M { int32 b = 2; string a = 1; bool c = 3; }'},
        {"schemaType": "PROTOBUF", "schema": 'syntax = "proto3";\nmessage M { bool c = 3; string a = 1; int32 b = 2; }'},
    ),
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(EQUIVALENT))
async def test_normalize_true_merges_equivalent_schemas(http: httpx.AsyncClient, kind: str) -> None:
    """With normalize=true an equivalent schema gets the same id and version; without, a new one."""
    for subject in ("a", "b"):
        await post(http, f"/subjects/{subject}/versions", {"schema": "{}", "schemaType": "JSON"})
    first, second = EQUIVALENT[kind]
    one = await post(http, "/subjects/s/versions", first, normalize="true")
    two = await post(http, "/subjects/s/versions", second, normalize="true")
    found = await post(http, "/subjects/s", second, normalize="true")
    plain = await post(http, "/subjects/t/versions", second)
    assert (one["id"], 1) == (two["id"], two["version"])
    assert (one["id"], 1) == (found["id"], found["version"])
    assert one["id"] != plain["id"]


async def test_normalize_true_stores_the_normal_form(http: httpx.AsyncClient) -> None:
    """The Avro schema registered with normalize=true reads back in its normal form."""
    await post(http, "/subjects/s/versions", EQUIVALENT["AVRO"][0], normalize="true")
    stored = (await http.get("/subjects/s/versions/1")).json()["schema"]
    assert '{"fields":[{"name":"x","type":"string"}],"name":"n.A","type":"record"}' == stored


async def test_incompatible_registration_gives_confluents_409_details(
    http: httpx.AsyncClient,
) -> None:
    """The 409 message names the subject and lists the reasons, the old version, its text and
    the level, as Confluent's does."""
    await post(http, "/subjects/s/versions", {"schema": AVRO})
    breaking = json.dumps({"type": "record", "name": "A", "fields": [{"name": "y", "type": "int"}]})
    response = await http.post("/subjects/s/versions", json={"schema": breaking})
    body = response.json()
    assert (409, 409) == (response.status_code, body["error_code"])
    assert body["message"].startswith(
        'Schema being registered is incompatible with an earlier schema for subject "s", '
        "details: [{errorType:'READER_FIELD_MISSING_DEFAULT_VALUE', description:'"
    )
    assert body["message"].endswith(
        f"{{oldSchemaVersion: 1}}, {{oldSchema: '{AVRO}'}}, "
        "{validateFields: 'false', compatibility: 'BACKWARD'}]"
    )


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/compatibility/subjects/nobody/versions", {"is_compatible": True}),
        ("/compatibility/subjects/nobody/versions/latest", {"is_compatible": True}),
        ("/compatibility/subjects/nobody/versions/2", {"error_code": 40402}),
    ],
)
async def test_compatibility_against_an_unknown_subject(
    http: httpx.AsyncClient, path: str, expected: dict[str, Any]
) -> None:
    """No versions means compatible, unless a version number is asked for (40402)."""
    body = (await http.post(path, json={"schema": AVRO})).json()
    assert expected == {key: body[key] for key in expected}


@pytest.mark.parametrize("subject", ["nobody", "a-value"])
async def test_a_missing_version_is_confluents_404_40402(
    http: httpx.AsyncClient, subject: str
) -> None:
    """A check against a version number that is not there, of a subject that does not exist or
    of one that does, is Confluent's 404 with error 40402 and its message, word for word."""
    await post(http, "/subjects/a-value/versions", {"schema": AVRO})
    response = await http.post(
        f"/compatibility/subjects/{subject}/versions/7", json={"schema": AVRO}
    )
    expected = {"error_code": 40402, "message": "Version 7 not found."}
    assert (404, expected) == (response.status_code, response.json())


async def test_an_unknown_subject_is_compatible_as_confluent_answers(
    http: httpx.AsyncClient,
) -> None:
    """Against a subject that does not exist (or whose versions are all deleted), latest and
    the level's versions answer 200 is_compatible true, as Confluent's registry does (its
    RestApiTest.testCompatibilityNonExistentSubject)."""
    await post(http, "/subjects/gone/versions", {"schema": AVRO})
    await http.delete("/subjects/gone")
    answers = []
    for subject in ("nobody", "gone"):
        for path in ("versions", "versions/latest"):
            response = await http.post(
                f"/compatibility/subjects/{subject}/{path}", json={"schema": AVRO}
            )
            answers.append((response.status_code, response.json()))
    assert [(200, {"is_compatible": True})] * 4 == answers


async def test_verbose_check_of_an_invalid_schema_says_why(http: httpx.AsyncClient) -> None:
    """With verbose=true an invalid schema is an incompatible verdict with the parser's reason;
    without it, a 42201."""
    path = "/compatibility/subjects/s/versions"
    bad = {"schema": '{"type": "record", "name": "X"}'}
    verbose = (await http.post(path, json=bad, params={"verbose": "true"})).json()
    plain = (await http.post(path, json=bad)).json()
    assert False is verbose["is_compatible"]
    assert verbose["messages"][0].startswith("invalid Avro schema")
    assert 42201 == plain["error_code"]


async def test_deleted_only_lists_soft_deleted_subjects_and_versions(
    http: httpx.AsyncClient,
) -> None:
    """deletedOnly=true lists only what was soft-deleted."""
    second = json.dumps(
        {"type": "record", "name": "A", "fields": [{"name": "x", "type": "string", "default": ""}]}
    )
    await post(http, "/subjects/kept/versions", {"schema": AVRO})
    await post(http, "/subjects/kept/versions", {"schema": second})
    await post(http, "/subjects/gone/versions", {"schema": AVRO})
    await http.delete("/subjects/kept/versions/1")
    await http.delete("/subjects/gone")
    subjects = (await http.get("/subjects", params={"deletedOnly": "true"})).json()
    versions = (await http.get("/subjects/kept/versions", params={"deletedOnly": "true"})).json()
    assert (["gone", "kept"], [1]) == (subjects, versions)
    assert ["kept"] == (await http.get("/subjects")).json()


async def test_schema_by_id_with_a_subject_names_its_version(http: httpx.AsyncClient) -> None:
    """GET /schemas/ids/{id}?subject= adds the subject and the version using the id."""
    await post(http, "/subjects/other/versions", {"schema": AVRO})
    schema_id = (await post(http, "/subjects/s/versions", {"schema": AVRO}))["id"]
    body = (await http.get(f"/schemas/ids/{schema_id}", params={"subject": "s"})).json()
    plain = (await http.get(f"/schemas/ids/{schema_id}")).json()
    assert ("s", 1, AVRO) == (body["subject"], body["version"], body["schema"])
    assert "subject" not in plain


async def test_format_serialized_serves_a_protobuf_descriptor(http: httpx.AsyncClient) -> None:
    """format=serialized returns the base64 FileDescriptorProto (by id and by version)."""
    from google.protobuf.descriptor_pb2 import FileDescriptorProto

    schema_id = (
        await post(http, "/subjects/s/versions", {"schema": ADDRESS, "schemaType": "PROTOBUF"})
    )["id"]
    by_id = (await http.get(f"/schemas/ids/{schema_id}", params={"format": "serialized"})).json()
    by_version = (await http.get("/subjects/s/versions/1", params={"format": "serialized"})).json()
    file = FileDescriptorProto.FromString(base64.b64decode(by_id["schema"]))
    assert ("shop", ["Address"]) == (file.package, [m.name for m in file.message_type])
    assert by_id["schema"] == by_version["schema"]


async def test_readonly_override_wins_over_subject_modes(http: httpx.AsyncClient) -> None:
    """A global READONLY_OVERRIDE refuses writes even where a subject says READWRITE; config
    changes are refused too, and the mode itself can still be lifted."""
    await http.put("/mode/s", json={"mode": "READWRITE"})
    assert {"mode": "READONLY_OVERRIDE"} == (
        await http.put("/mode", json={"mode": "READONLY_OVERRIDE"})
    ).json()
    refused = await http.post("/subjects/s/versions", json={"schema": AVRO})
    config = await http.put("/config/s", json={"compatibility": "NONE"})
    effective = (await http.get("/mode/s", params={"defaultToGlobal": "true"})).json()
    assert (422, 42205) == (refused.status_code, refused.json()["error_code"])
    assert 42205 == config.json()["error_code"]
    assert {"mode": "READONLY_OVERRIDE"} == effective
    await http.put("/mode", json={"mode": "READWRITE"})
    assert 200 == (await http.post("/subjects/s/versions", json={"schema": AVRO})).status_code
