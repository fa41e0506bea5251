"""The registry's auth never switches itself off: empty or contradictory settings are refused in
one line, and with auth on every path but ``/healthz`` (the API, ``/openapi.json``, ``/docs``)
answers 401 with a ``WWW-Authenticate`` naming the scheme."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from devservers import free_port
from schemas import InvalidInputError
from schemas.http_auth import Auth, auth_from_settings
from schemas.registry import Registry
from schemas.server import CONTENT_TYPE, REALM, create_app

PATHS = ["/", "/subjects", "/schemas/ids/1", "/config", "/openapi.json", "/docs"]


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _type_and_code(response: httpx.Response) -> tuple[str, int]:
    return response.headers["content-type"], response.json()["error_code"]


@pytest.mark.parametrize(
    ("auth", "good", "challenge"),
    [
        (
            auth_from_settings(token="t0ken", realm=REALM),
            {"Authorization": "Bearer t0ken"},
            'Bearer realm="choreograph schema registry"',
        ),
        (
            auth_from_settings("ops", "pw", realm=REALM),
            _basic("ops", "pw"),
            'Basic realm="choreograph schema registry", charset="UTF-8"',
        ),
    ],
)
async def test_auth_protects_everything_but_health(
    tmp_path: Path, auth: Auth, good: dict[str, str], challenge: str
) -> None:
    """Without the right credentials every path, OpenAPI and the docs included, is a 401 /
    40101 whose challenge names the scheme; /healthz stays open; the credentials get in."""
    registry = Registry.open(f"sqlite:///{tmp_path}/r.db")
    transport = httpx.ASGITransport(app=create_app(registry, auth=auth))
    async with httpx.AsyncClient(transport=transport, base_url="http://registry") as client:
        await client.post("/subjects/a-value/versions", json={"schema": '"string"'}, headers=good)
        for headers in ({}, {"Authorization": "Bearer wrong"}, _basic("ops", "nope")):
            refused = [await client.get(path, headers=headers) for path in PATHS]
            assert [(401, challenge, CONTENT_TYPE, 40101)] * len(PATHS) == [
                (r.status_code, r.headers["www-authenticate"], *_type_and_code(r)) for r in refused
            ]
        allowed = [(await client.get(path, headers=good)).status_code for path in PATHS]
        assert [200] * len(PATHS) == allowed
        assert 200 == (await client.get("/healthz")).status_code
    registry.close()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"token": ""}, "the auth token is empty"),
        ({"token": " t"}, "the auth token is empty"),
        ({"token": "t", "user": "u", "password": "p"}, "choose one authentication"),
        ({"user": "u"}, "basic auth needs a non-empty --auth-user and --auth-password"),
        ({"user": "", "password": "p"}, "basic auth needs a non-empty"),
        ({"user": "a:b", "password": "p"}, "cannot contain ':'"),
    ],
)
def test_empty_or_contradictory_settings_are_refused(
    settings: dict[str, str], message: str
) -> None:
    """Settings that would switch auth off or contradict each other raise a usage error."""
    with pytest.raises(InvalidInputError, match=message):
        auth_from_settings(**settings)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--auth-token", ""], {}, "the auth token is empty"),
        ([], {"CHOREO_REGISTRY_TOKEN": ""}, "the auth token is empty"),
        (["--auth-user", "u", "--auth-password", "p", "--auth-token", "t"], {}, "choose one"),
        ([], {"CHOREO_REGISTRY_PASSWORD": "p"}, "basic auth needs"),
    ],
)
def test_registry_serve_refuses_bad_auth_settings_in_one_line(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    """`registry serve` with empty or contradictory auth exits 2 with one line, serving
    nothing (and never echoes the secret)."""
    storage = f"sqlite:///{tmp_path}/r.db"
    command = ["registry", "serve", "--storage", storage, "--port", str(free_port()), *args]
    result = subprocess.run(
        [sys.executable, "-m", "choreo", *command],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,  # a server that started anyway fails here instead of serving
        check=False,
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert (2, 1, True) == (result.returncode, len(lines), message in result.stderr), result


def test_registry_serve_warns_when_it_listens_beyond_loopback_without_auth(
    tmp_path: Path,
) -> None:
    """Bound to all interfaces without auth, the registry says so in one line on stderr."""
    command = [sys.executable, "-m", "choreo", "registry", "serve", "--host", "0.0.0.0"]
    command += ["--port", str(free_port()), "--storage", f"sqlite:///{tmp_path}/r.db"]
    server = subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stderr is not None
        line = server.stderr.readline()  # blocks until the server has written its warning
    finally:
        server.terminate()
        server.wait(timeout=30)
        if server.stderr is not None:
            server.stderr.close()
    assert line.startswith("warning: the schema registry listens on 0.0.0.0 without authentication")
