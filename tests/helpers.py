"""Small test helpers: wait on a condition, collect events."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from broker import Event

__all__ = ["Collector", "eventually"]


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]], *, timeout: float = 20.0, what: str = ""
) -> None:
    """Wait until ``condition()`` is true, polling; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        await asyncio.sleep(0.01)


class Collector:
    """A handler that records the events it handles."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def __call__(self, event: Event) -> None:
        self.events.append(event)

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.events]

    def datas(self) -> list[object]:
        return [e.data for e in self.events]
