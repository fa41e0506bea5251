"""How the command line shows library errors: one place maps them by class to exit codes and
adds the command to run; the library messages themselves name no command."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from broker.errors import BrokerError, ConfigurationError, MissingExtraError, PublishTimeoutError
from choreo import errors
from choreo.commands.outbox import outbox_app
from choreo.commands.schema import schema_app
from connectors.errors import (
    DatabaseUnavailableError,
    OutboxConfigError,
    OutboxError,
    OutboxMissingError,
)
from devservers import free_port
from saga_monitor.errors import DefinitionError, SagaConfigError, SagaError, SagaStoreError
from schemas.errors import InvalidSchemaError, RegistryError, SubjectNotFoundError

runner = CliRunner()


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConfigurationError("x"), 2),
        (MissingExtraError("x"), 2),
        (BrokerError("x"), 1),
        (PublishTimeoutError("x"), 1),
        (InvalidSchemaError("x"), 2),
        (SubjectNotFoundError("x"), 1),
        (RegistryError("x"), 1),
        (OutboxConfigError("x"), 2),
        (DatabaseUnavailableError("x"), 1),
        (OutboxError("x"), 1),
        (SagaConfigError("x"), 2),
        (DefinitionError("x"), 2),
        (SagaStoreError("x"), 1),
        (SagaError("x"), 1),
        (ValueError("a bug"), None),
    ],
)
def test_exit_codes_follow_each_package_usage_and_root_classes(
    error: Exception, code: int | None
) -> None:
    """A package's usage-error class exits 2, anything else under its root 1, a bug None."""
    assert code == errors.exit_code(error)


@pytest.mark.parametrize("root", [BrokerError, RegistryError, OutboxError, SagaError])
def test_library_errors_carry_no_exit_codes(root: type[Exception]) -> None:
    """The library's root errors know nothing of the command line."""
    assert [] == [name for name in dir(root) if "cli" in name or "exit" in name]


def test_a_missing_outbox_names_the_command_that_creates_it(tmp_path: Path) -> None:
    """`outbox relay` on a database with no outbox exits 1 with one line naming `outbox init`."""
    url = f"sqlite:///{tmp_path}/missing.db"
    result = runner.invoke(outbox_app, ["relay", "--db", url, "--broker", "memory://x"])
    lines = result.stderr.strip().splitlines()
    assert (1, 1) == (result.exit_code, len(lines)), result.stderr
    assert lines[0].endswith(f"; run: choreo outbox init --db {url} --table outbox")
    assert "choreo" not in str(OutboxMissingError("m", database=url, table="outbox"))


def test_an_unreachable_registry_names_the_command_that_serves_one() -> None:
    """A registry URL nobody serves: exit 1, one line naming `choreo registry serve`."""
    url = f"http://127.0.0.1:{free_port()}"
    result = runner.invoke(schema_app, ["ls", "--registry", url])
    lines = result.stderr.strip().splitlines()
    assert (1, 1) == (result.exit_code, len(lines)), result.stderr
    assert "run: choreo registry serve, or set --registry / CHOREO_REGISTRY_URL" in lines[0]
