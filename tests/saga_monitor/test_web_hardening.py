"""The saga web page and API under hostile requests: a 4xx with a message for every bad request,
correlation ids with ``/``, and authentication like the registry's (token or basic auth)."""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from choreo.cli import app as cli
from saga_monitor import Correlator, SagaConfigError, SagaStore, open_saga_store, parse_definitions
from saga_monitor.web import create_app
from saga_monitor.web_http import BasicAuth, BearerAuth, auth_from_settings
from tests.saga_monitor.helpers import event, example, populate
from tests.saga_monitor.test_web import served  # noqa: F401

IDS = ("a/b", "a b", "ünï/c%d", "100%", "x%2Fy", "/lead", "[/]")
PAGES = ("/", "/sagas", "/api/instances", "/api/counts", "/api/definitions", "/openapi.json")


@pytest.fixture
def store() -> Iterator[SagaStore]:
    """A memory store with the example instances and one per hostile correlation id."""
    opened = open_saga_store("memory://")
    populate(opened)
    correlator = Correlator(example())
    for corr in IDS:
        correlator.apply(opened, event("order.placed", corr, 0), topic="o", now=datetime.now(UTC))
    yield opened
    opened.close()


@pytest.fixture
def client(store: SagaStore) -> TestClient:
    return TestClient(create_app(store, refresh=0))


BAD_QUERIES = (
    "limit=99999999999999999999999",
    "limit=0",
    "limit=-1",
    "limit=ten",
    "since=99999999999d",
    "since=" + "9" * 400,
    "since=0s",
    "since=-1h",
    "since=soon",
    "state=nope",
    "q=%00",
    "saga=%00",
)
PAGE_ONLY = ("refresh=-1", "refresh=99999999999999999999999")


@pytest.mark.parametrize(
    "url",
    [f"/?{q}" for q in (*BAD_QUERIES, *PAGE_ONLY)] + [f"/api/instances?{q}" for q in BAD_QUERIES],
)
def test_bad_queries_are_a_4xx_with_a_message(client: TestClient, url: str) -> None:
    """Every bad query parameter on the page and the API is a 422 that says what is wrong:
    an HTML page on the page, JSON in the API."""
    response = client.get(url)
    assert 422 == response.status_code, response.text
    if url.startswith("/api/"):
        assert response.json()["detail"]
    else:
        assert response.headers["content-type"].startswith("text/html")
        assert '<p class="banner">' in response.text


def _said(page: str) -> str:
    """The one-line message of an error page."""
    return page.split('<p class="banner">', 1)[1].split("</p>", 1)[0]


def test_page_errors_are_html_and_api_errors_json_over_http(served: str) -> None:  # noqa: F811
    """Over HTTP, a bad ``since``, a bad limit or a missing instance on a page answers an
    HTML page with the one-line error and the status kept; the JSON API keeps its JSON."""
    asked = {
        "/?since=soon": (422, "since: &#x27;soon&#x27; is not a duration; use e.g. 30s, 5m"),
        "/?limit=ten": (422, "limit: Input should be a valid integer"),
        "/instances/order-fulfilment/no%2Fsuch": (
            404,
            "no instance of order-fulfilment with correlation id no/such",
        ),
    }
    with httpx.Client(base_url=served, timeout=10) as http:
        pages = {url: http.get(url, headers={"Accept": "text/html"}) for url in asked}
        api = [http.get("/api/instances?since=soon"), http.get("/api/instances/x/no%2Fsuch")]
    assert {url: (status, True, True) for url, (status, _) in asked.items()} == {
        url: (
            r.status_code,
            r.headers["content-type"].startswith("text/html"),
            _said(r.text).startswith(asked[url][1]),
        )
        for url, r in pages.items()
    }
    assert [
        (422, "since: 'soon' is not a duration; use e.g. 30s, 5m, 2h or 1d"),
        (404, "no instance of x with correlation id no/such"),
    ] == [(r.status_code, r.json()["detail"]) for r in api]


@pytest.mark.parametrize("corr", IDS)
@pytest.mark.parametrize("encode", ["all", "keep-slashes"])
def test_correlation_ids_with_slashes_and_unicode_work(
    client: TestClient, corr: str, encode: str
) -> None:
    """An instance whose correlation id holds ``/``, ``%``, spaces or unicode is found on the
    page and in the API, with the slash encoded or not."""
    path = quote(corr, safe="" if encode == "all" else "/")
    api = client.get(f"/api/instances/order-fulfilment/{path}")
    assert (200, corr) == (api.status_code, api.json()["correlation_id"])
    page = client.get(f"/instances/order-fulfilment/{path}")
    assert (200, True) == (page.status_code, "order.placed" in page.text)


def test_the_index_links_to_each_instance(client: TestClient) -> None:
    """Every link on the index opens its instance, whatever its correlation id holds."""
    import re

    links = re.findall(r'href="(/instances/[^"]+)"', client.get("/").text)
    assert len(IDS) + 4 == len(links)
    assert [200] * len(links) == [client.get(link).status_code for link in links]


def test_a_saga_name_with_a_slash_works(store: SagaStore) -> None:
    """A saga named with ``/`` is reached by its encoded name."""
    definitions = parse_definitions(
        "sagas:\n  - name: orders/eu\n    start: [order.placed]\n    complete: [done]\n"
    )
    Correlator(definitions).apply(
        store, event("order.placed", "c/1", 0), topic="o", now=datetime.now(UTC)
    )
    client = TestClient(create_app(store))
    found = client.get("/api/instances/orders%2Feu/c%2F1")
    assert (200, "orders/eu") == (found.status_code, found.json()["saga"])
    assert 200 == client.get("/instances/orders%2Feu/c/1").status_code


def test_unknown_instances_are_404(client: TestClient) -> None:
    """An instance that does not exist is a 404 with a message, on the page and the API."""
    api = client.get("/api/instances/order-fulfilment/no%2Fsuch")
    assert (404, True) == (api.status_code, "no instance" in api.json()["detail"])
    page = client.get("/instances/x/y/z")
    assert (404, True) == (
        page.status_code,
        "no instance of x with correlation id y/z" in page.text,
    )


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.mark.parametrize(
    ("auth", "good", "bad", "challenge"),
    [
        (
            BearerAuth("s3cret"),
            {"Authorization": "Bearer s3cret"},
            {"Authorization": "Bearer wrong"},
            'Bearer realm="choreograph sagas"',
        ),
        (
            BasicAuth("ops", "pw"),
            _basic("ops", "pw"),
            _basic("ops", "nope"),
            'Basic realm="choreograph sagas", charset="UTF-8"',
        ),
    ],
)
def test_auth_protects_everything_but_health(
    store: SagaStore,
    auth: BasicAuth | BearerAuth,
    good: dict[str, str],
    bad: dict[str, str],
    challenge: str,
) -> None:
    """With auth on, pages, API, OpenAPI and docs need the credentials (401 with a challenge
    naming the scheme); /healthz stays open; the right credentials get through."""
    client = TestClient(create_app(store, auth=auth))
    paths = [*PAGES, "/api/docs", "/instances/order-fulfilment/order-ok"]
    for headers in ({}, bad, {"Authorization": "Bearer"}, {"Authorization": "Basic !!"}):
        refused = [client.get(path, headers=headers) for path in paths]
        assert [(401, challenge)] * len(paths) == [
            (r.status_code, r.headers.get("www-authenticate")) for r in refused
        ]
    assert [200] * len(paths) == [client.get(path, headers=good).status_code for path in paths]
    assert 200 == client.get("/healthz").status_code


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"token": ""}, "the auth token is empty"),
        ({"token": " "}, "the auth token is empty"),
        ({"token": "t", "user": "u", "password": "p"}, "choose one authentication"),
        ({"token": "t", "password": "p"}, "choose one authentication"),
        ({"user": "u"}, "basic auth needs a non-empty --auth-user and --auth-password"),
        ({"password": "p"}, "basic auth needs a non-empty --auth-user and --auth-password"),
        ({"user": "", "password": "p"}, "basic auth needs a non-empty"),
        ({"user": "a:b", "password": "p"}, "cannot contain ':'"),
    ],
)
def test_contradictory_or_empty_auth_settings_are_refused(
    settings: dict[str, str], message: str
) -> None:
    """Auth never switches itself off: empty or contradictory settings raise a config error."""
    with pytest.raises(SagaConfigError, match=message):
        auth_from_settings(**settings)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--auth-token", ""], {}, "the auth token is empty"),
        ([], {"CHOREO_SAGA_TOKEN": ""}, "the auth token is empty"),
        (["--auth-user", "u", "--auth-password", "p", "--auth-token", "t"], {}, "choose one"),
        (["--auth-user", "u"], {}, "basic auth needs"),
    ],
)
def test_saga_serve_refuses_bad_auth_settings_in_one_line(
    args: list[str], env: dict[str, str], message: str
) -> None:
    """`saga serve` with empty or contradictory auth exits 2 with one line, serving nothing."""
    result = CliRunner().invoke(cli, ["saga", "serve", "--store", "memory://", *args], env=env)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert (2, 1, True) == (result.exit_code, len(lines), message in result.stderr), result.output


def test_saga_serve_warns_when_it_listens_beyond_loopback_without_auth(tmp_path: Path) -> None:
    """Bound to all interfaces without auth, the server says so in one line on stderr."""
    from devservers import free_port

    command = [sys.executable, "-m", "choreo", "saga", "serve", "--store", "memory://"]
    command += ["--host", "0.0.0.0", "--port", str(free_port())]
    server = subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stderr is not None
        line = server.stderr.readline()  # blocks until the server has written its warning
    finally:
        server.terminate()
        server.wait(timeout=30)
        if server.stderr is not None:
            server.stderr.close()
    assert line.startswith("warning: the saga web server listens on 0.0.0.0 without authentication")
