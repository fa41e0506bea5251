"""The REST API's shapes, error codes and content type, driven over HTTP in process."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from schemas.registry import Registry
from schemas.server import CONTENT_TYPE, BearerAuth, create_app

AVRO = json.dumps({"type": "record", "name": "A", "fields": [{"name": "x", "type": "string"}]})


@pytest.fixture
async def http(registry: Registry) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(registry))
    async with httpx.AsyncClient(transport=transport, base_url="http://registry") as client:
        yield client


async def error(response: httpx.Response) -> tuple[int, int]:
    return response.status_code, int(response.json()["error_code"])


async def register(http: httpx.AsyncClient, subject: str, schema: str = AVRO) -> Any:
    response = await http.post(f"/subjects/{subject}/versions", json={"schema": schema})
    assert 200 == response.status_code, response.text
    return response.json()


async def test_responses_carry_confluents_content_type(http: httpx.AsyncClient) -> None:
    """Success and error bodies use application/vnd.schemaregistry.v1+json."""
    ok = await http.get("/subjects")
    missing = await http.get("/subjects/none/versions")
    assert (CONTENT_TYPE, CONTENT_TYPE) == (
        ok.headers["content-type"],
        missing.headers["content-type"],
    )


async def test_requests_with_confluents_content_type_are_accepted(http: httpx.AsyncClient) -> None:
    """A body sent as application/vnd.schemaregistry.v1+json is read as JSON."""
    response = await http.post(
        "/subjects/a-value/versions",
        content=json.dumps({"schema": AVRO}),
        headers={"content-type": CONTENT_TYPE},
    )
    assert {"id": 1, "version": 1, "subject": "a-value"} == response.json()


@pytest.mark.parametrize(
    ("method", "path", "body", "expected"),
    [
        ("GET", "/subjects/none/versions", None, (404, 40401)),
        ("GET", "/subjects/a-value/versions/9", None, (404, 40402)),
        ("GET", "/schemas/ids/999", None, (404, 40403)),
        ("GET", "/subjects/a-value/versions/zero", None, (422, 42202)),
        ("GET", "/subjects/a-value/versions/0", None, (422, 42202)),
        ("PUT", "/config", {"compatibility": "SIDEWAYS"}, (422, 42203)),
        ("PUT", "/mode", {"mode": "SOMETIMES"}, (422, 42204)),
        ("POST", "/subjects/a-value/versions", {"schema": "{nope"}, (422, 42201)),
        ("POST", "/subjects/a-value/versions", {"schema": AVRO, "schemaType": "XML"}, (422, 42201)),
        ("POST", "/subjects/a-value/versions", {"nothing": 1}, (422, 422)),
        ("GET", "/config/a-value", None, (404, 40408)),
        ("GET", "/mode/a-value", None, (404, 40409)),
        ("GET", "/associations/resources/default/orders", None, (404, 404)),
    ],
)
async def test_error_codes(
    http: httpx.AsyncClient, method: str, path: str, body: Any, expected: tuple[int, int]
) -> None:
    """Each mistake gets Confluent's HTTP status and error code."""
    await register(http, "a-value")
    response = await http.request(method, path, json=body)
    assert expected == await error(response)


async def test_booleans_in_query_strings_accept_both_spellings(http: httpx.AsyncClient) -> None:
    """deleted=true and deleted=True both count (Python clients send True)."""
    await register(http, "a-value")
    await http.delete("/subjects/a-value")
    lower = await http.get("/subjects", params={"deleted": "true"})
    upper = await http.get("/subjects", params={"deleted": "True"})
    assert (["a-value"], ["a-value"]) == (lower.json(), upper.json())


async def test_percent_encoded_slash_stays_inside_the_subject(http: httpx.AsyncClient) -> None:
    """/subjects/a%2Fb/versions addresses subject 'a/b'."""
    await register(http, "team%2Forders-value")
    response = await http.get("/subjects/team%2Forders-value/versions/latest")
    assert ("team/orders-value", 1) == (response.json()["subject"], response.json()["version"])


async def test_raw_schema_endpoints_return_the_schema_text(http: httpx.AsyncClient) -> None:
    """/schemas/ids/{id}/schema and /subjects/{s}/versions/{v}/schema return the text."""
    registered = await register(http, "a-value")
    by_id = await http.get(f"/schemas/ids/{registered['id']}/schema")
    by_version = await http.get("/subjects/a-value/versions/1/schema")
    assert (json.loads(AVRO), json.loads(AVRO)) == (by_id.json(), by_version.json())


async def test_verbose_compatibility_returns_messages(http: httpx.AsyncClient) -> None:
    """verbose=true adds the reasons to an incompatible verdict."""
    await register(http, "a-value")
    breaking = json.dumps({"type": "record", "name": "A", "fields": [{"name": "y", "type": "int"}]})
    response = await http.post(
        "/compatibility/subjects/a-value/versions/latest",
        params={"verbose": "true"},
        json={"schema": breaking},
    )
    assert False is response.json()["is_compatible"]
    assert response.json()["messages"]


async def test_compatibility_against_an_empty_subject_is_compatible(
    http: httpx.AsyncClient,
) -> None:
    """Testing against all versions of a subject that does not exist yet says compatible."""
    response = await http.post("/compatibility/subjects/new-value/versions", json={"schema": AVRO})
    assert {"is_compatible": True} == response.json()


async def test_schemas_listing(http: httpx.AsyncClient) -> None:
    """GET /schemas lists every subject-version with its schema."""
    await register(http, "a-value")
    await register(http, "b-value")
    rows = (await http.get("/schemas")).json()
    assert [("a-value", 1, 1), ("b-value", 1, 1)] == [
        (r["subject"], r["version"], r["id"]) for r in rows
    ]


async def test_openapi_document_describes_the_api(http: httpx.AsyncClient) -> None:
    """The app serves an OpenAPI document naming the Confluent paths."""
    paths = (await http.get("/openapi.json")).json()["paths"]
    assert {"/subjects/{subject}/versions", "/schemas/ids/{schema_id}", "/config", "/mode"} <= set(
        paths
    )


async def test_bearer_token_auth(registry: Registry) -> None:
    """With a bearer token configured, requests without it get 401 / 40101."""
    transport = httpx.ASGITransport(app=create_app(registry, auth=BearerAuth("t0ken")))
    async with httpx.AsyncClient(transport=transport, base_url="http://registry") as client:
        refused = await client.get("/subjects")
        allowed = await client.get("/subjects", headers={"Authorization": "Bearer t0ken"})
    assert ((401, 40101), 200) == (await error(refused), allowed.status_code)


async def test_malformed_requests_never_give_500(http: httpx.AsyncClient) -> None:
    """A sweep of odd inputs over every route answers 4xx, never a server error."""
    await register(http, "a-value")
    bodies: list[Any] = [
        None,
        {},
        [],
        "x",
        {"schema": 5},
        {"schema": "[]"},
        {"schema": "null"},
        {"schema": AVRO, "references": [{"name": 1}]},
        {"compatibility": None},
        {"mode": ""},
        {"schema": '{"type": "string"}', "schemaType": "JSON"},
    ]
    paths = [
        "/subjects/a-value/versions",
        "/subjects/a-value",
        "/config",
        "/config/a-value",
        "/mode",
        "/mode/a-value",
        "/compatibility/subjects/a-value/versions/1",
        "/subjects/%00/versions",
        "/subjects/a-value/versions/99999999999",
    ]
    statuses = set()
    for path in paths:
        for method in ("GET", "POST", "PUT", "DELETE"):
            for body in bodies:
                response = await http.request(method, path, json=body)
                statuses.add(response.status_code)
    assert all(status < 500 for status in statuses), statuses


async def test_cached_schema_by_id_still_needs_credentials(registry: Registry) -> None:
    """The fast path for GET /schemas/ids/{id} applies the same auth as the app."""
    transport = httpx.ASGITransport(app=create_app(registry, auth=BearerAuth("t0ken")))
    token = {"Authorization": "Bearer t0ken"}
    async with httpx.AsyncClient(transport=transport, base_url="http://registry") as client:
        await client.post("/subjects/a-value/versions", json={"schema": AVRO}, headers=token)
        warm = await client.get("/schemas/ids/1", headers=token)
        again = await client.get("/schemas/ids/1", headers=token)
        refused = await client.get("/schemas/ids/1")
    assert (200, CONTENT_TYPE, warm.json()) == (
        again.status_code,
        again.headers["content-type"],
        again.json(),
    )
    assert (401, 40101) == await error(refused)


async def test_hard_deleted_schema_is_gone_from_the_cache(http: httpx.AsyncClient) -> None:
    """After a permanent delete, GET /schemas/ids/{id} is 40403 even if it was cached."""
    registered = await register(http, "a-value")
    assert 200 == (await http.get(f"/schemas/ids/{registered['id']}")).status_code
    await http.delete("/subjects/a-value")
    await http.delete("/subjects/a-value", params={"permanent": "true"})
    assert (404, 40403) == await error(await http.get(f"/schemas/ids/{registered['id']}"))
