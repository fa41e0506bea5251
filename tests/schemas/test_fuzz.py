"""schemathesis fuzzes every operation of the OpenAPI document: no input gives a 5xx."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

try:
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.configuration import set_hypothesis_home_dir

    MISSING = ""
except ModuleNotFoundError as exc:  # fail the test, not the whole collection
    MISSING = f"the fuzz test needs {exc.name!r}: pip install 'schemathesis>=4'"

from schemas.registry import Registry
from schemas.server import create_app


def test_no_input_gives_a_server_error(registry: Registry, tmp_path: Path) -> None:
    """Whatever schemathesis generates for each operation, the answer is below 500."""
    if MISSING:
        pytest.fail(MISSING, pytrace=False)
    set_hypothesis_home_dir(str(tmp_path / ".hypothesis"))  # keep the work tree clean
    api = schemathesis.openapi.from_asgi("/openapi.json", create_app(registry))
    failures: list[str] = []
    operations = [result.ok() for result in api.get_all_operations()]

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=5,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: Any) -> None:
            response = case.call()
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path}: {response.text[:200]}")

        fuzz()
    assert 25 <= len(operations)
    assert [] == failures
