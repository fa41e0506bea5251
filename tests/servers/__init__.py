"""Live-server fixtures, one module per broker backend (each adds its backend to the contract
suite, see tests/contract/conftest.py). They are thin pytest wrappers around ``devservers``,
which the benchmarks use too."""

from __future__ import annotations

from typing import NoReturn

import pytest

from devservers import ServerUnavailableError, require_all

__all__ = ["unavailable"]


def unavailable(reason: str) -> NoReturn:
    """Skip for lack of a server; fail instead when every backend is required (CI)."""
    if require_all():
        raise ServerUnavailableError(f"{reason} (CHOREO_REQUIRE_ALL=1: nothing may be skipped)")
    pytest.skip(reason)
