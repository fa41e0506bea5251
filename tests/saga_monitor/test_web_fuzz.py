"""schemathesis fuzzes every operation of the saga web server's OpenAPI document (pages and JSON
API, with and without auth): no input gives a 5xx."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis.configuration import set_hypothesis_home_dir

from saga_monitor import SagaStore
from saga_monitor.web import create_app
from saga_monitor.web_http import BearerAuth
from tests.saga_monitor.helpers import EXAMPLE

TOKEN = "fuzz-token"


def server_errors(app: FastAPI, headers: dict[str, str]) -> tuple[int, list[str]]:
    """How many operations the document has, and every 5xx schemathesis provoked."""
    api = schemathesis.openapi.from_asgi("/openapi.json", app, headers=headers)
    failures: list[str] = []
    operations = [result.ok() for result in api.get_all_operations()]
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=30,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: Any) -> None:
            response = case.call(headers=headers)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path}: {response.text[:200]}")

        fuzz()
    return len(operations), failures


@pytest.mark.parametrize("auth", [False, True])
def test_no_input_gives_a_server_error(store: SagaStore, tmp_path: Path, auth: bool) -> None:
    """Whatever schemathesis generates for each page and API operation, the answer is below 500."""
    set_hypothesis_home_dir(str(tmp_path / ".hypothesis"))  # keep the work tree clean
    headers = {"Authorization": f"Bearer {TOKEN}"} if auth else {}
    app = create_app(
        store, definitions=EXAMPLE, refresh=0, auth=BearerAuth(TOKEN) if auth else None
    )
    count, failures = server_errors(app, headers)
    assert (15, []) == (count, failures)
