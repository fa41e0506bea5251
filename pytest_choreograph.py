"""The pytest plugin of :mod:`broker.testing`, registered as the ``pytest11`` entry point
``choreograph``: installing choreograph makes these fixtures available.

* ``virtual_clock`` - a fresh :class:`~broker.testing.VirtualClock`;
* ``choreo_kit`` - a :class:`~broker.testing.ChoreoKit` on that clock, closed after the test
  (an async fixture: it needs pytest-asyncio, in auto mode or with ``@pytest.mark.asyncio``).

A top-level module, not ``broker.testing.plugin``: pytest imports its plugins before coverage
starts, and importing anything under ``broker`` would import the whole package then, so its
module-level lines would never count as covered in the test runs of choreograph or of its
users. choreograph is imported only when a test asks for a fixture. Disable the plugin with
``-p no:choreograph``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pytest

if TYPE_CHECKING:
    from broker.testing import ChoreoKit, VirtualClock

__all__ = ["choreo_kit", "virtual_clock"]

_F = TypeVar("_F", bound=Callable[..., Any])


@pytest.fixture
def virtual_clock() -> VirtualClock:
    """A virtual clock that moves only on ``await virtual_clock.advance(...)``."""
    from broker.testing import VirtualClock

    return VirtualClock()


def _async_fixture(function: _F) -> _F:
    """pytest-asyncio's fixture decorator (it works in its strict mode too); without
    pytest-asyncio, pytest's own, and pytest then names what is missing."""
    try:
        import pytest_asyncio
    except ImportError:  # pragma: no cover - the test extra installs it
        return cast(_F, pytest.fixture(function))
    return cast(_F, pytest_asyncio.fixture(function))


@_async_fixture
async def choreo_kit(virtual_clock: VirtualClock) -> AsyncIterator[ChoreoKit]:
    """A :class:`~broker.testing.ChoreoKit` on ``virtual_clock``, closed afterwards."""
    from broker.testing import ChoreoKit

    kit = ChoreoKit(clock=virtual_clock)
    try:
        yield kit
    finally:
        await kit.close()
