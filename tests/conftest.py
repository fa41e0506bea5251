"""Shared fixtures. Each module in tests/servers/ provides one backend's live-server fixtures;
they are discovered here so the contract suite runs on every backend that has one."""

from __future__ import annotations

from pathlib import Path

SERVER_MODULES = sorted(
    p.stem for p in (Path(__file__).parent / "servers").glob("*.py") if not p.name.startswith("_")
)
pytest_plugins = [f"tests.servers.{name}" for name in SERVER_MODULES]
