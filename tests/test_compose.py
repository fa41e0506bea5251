"""The compose stack is consistent: CI has no Docker engine, so check what can be checked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from choreo.cli import app

COMPOSE = Path(__file__).parent.parent / "compose"
INFRA = ("kafka", "rabbitmq", "nats", "postgres", "mariadb")


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    return yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())


def test_infrastructure_services_have_health_checks(stack: dict[str, Any]) -> None:
    """Every broker and database has a pinned image and a health check."""
    services = stack["services"]
    for name in INFRA:
        assert ":" in services[name]["image"], f"{name} image is not pinned"
        assert services[name]["healthcheck"]["test"], f"{name} has no health check"


def test_cdc_settings_are_configured(stack: dict[str, Any]) -> None:
    """PostgreSQL runs with wal_level=logical and MariaDB with a ROW binlog."""
    assert "wal_level=logical" in stack["services"]["postgres"]["command"]
    assert "--binlog-format=ROW" in stack["services"]["mariadb"]["command"]
    assert "-js" in stack["services"]["nats"]["command"]


def test_dependencies_exist(stack: dict[str, Any]) -> None:
    """Every depends_on names a service of the stack."""
    services = stack["services"]
    for name, service in services.items():
        for dependency in service.get("depends_on", []):
            assert dependency in services, f"{name} depends on unknown {dependency}"


def test_mounted_files_exist(stack: dict[str, Any]) -> None:
    """Bind-mounted files and the Dockerfile are in compose/."""
    assert (COMPOSE / "Dockerfile").is_file()
    for service in stack["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (COMPOSE / source).is_file(), source


def _parse(command: Any, args: list[str]) -> None:
    """Parse ``args`` through the command tree; raises on an unknown command or option."""
    context = command.make_context("choreo", args)
    while hasattr(command, "get_command"):
        rest = [*getattr(context, "_protected_args", []), *context.args]
        sub = command.get_command(context, rest[0])
        assert sub is not None, f"unknown command {rest[0]!r} in {args}"
        context = sub.make_context(rest[0], rest[1:], parent=context)
        command = sub


def test_choreo_command_lines_parse(stack: dict[str, Any]) -> None:
    """Every choreo command line of the stack is accepted by the real CLI's parser."""
    command = typer.main.get_command(app)
    lines = [
        s["command"] for s in stack["services"].values() if s.get("command", [""])[0] == "choreo"
    ]
    for args in lines:
        _parse(command, list(args[1:]))
    assert len(lines) >= 5
    with pytest.raises(Exception, match="bogus"):  # the checker itself rejects a bad option
        _parse(command, ["saga", "monitor", "--bogus"])


def test_prometheus_scrapes_the_metrics_ports(stack: dict[str, Any]) -> None:
    """Prometheus targets match the --metrics-port of the relay and the monitor."""
    config = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    targets = {
        t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]
    }
    for name in ("outbox-relay", "saga-monitor"):
        args = stack["services"][name]["command"]
        port = args[args.index("--metrics-port") + 1]
        assert f"{name}:{port}" in targets
