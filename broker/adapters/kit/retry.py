"""Trying an operation again until a deadline: the one retry loop of the adapters and relays.

A publish that meets a broker restart, a lost connection or a leader election is tried again
with exponential backoff until its deadline; then the last error is turned into the adapter's
timeout error. Whether an error is worth another try is the caller's question (``retriable``),
and a relay that must stop can pass an :class:`asyncio.Event` that ends the waiting::

    await keep_trying(
        lambda left: send(timeout=left),
        timeout=30.0,
        retriable=lambda exc: isinstance(exc, ConnectionError),
        timed_out=lambda exc: PublishTimeoutError(f"... within 30s: {exc}"),
    )
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

__all__ = ["Backoff", "Stopped", "keep_trying", "keep_trying_each"]

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class Backoff:
    """Pauses between attempts: ``initial``, multiplied by ``multiplier`` up to ``maximum``."""

    initial: float = 0.05
    maximum: float = 1.0
    multiplier: float = 2.0

    def after(self, pause: float) -> float:
        """The pause that follows ``pause``."""
        return min(pause * self.multiplier, self.maximum)


class Stopped(Exception):
    """:func:`keep_trying` gave up because its ``stop`` event was set while it waited."""


async def keep_trying(
    attempt: Callable[[float], Awaitable[T]],
    *,
    timeout: float | None,
    retriable: Callable[[BaseException], bool],
    timed_out: Callable[[BaseException], BaseException] | None = None,
    backoff: Backoff = Backoff(),
    before_retry: Callable[[BaseException, float], None] | None = None,
    stop: asyncio.Event | None = None,
) -> T:
    """``await attempt(seconds_left)`` until it returns, trying again after a pause while
    ``retriable(error)`` says so and the ``timeout`` (None: forever) leaves room for the pause.

    A non-retriable error propagates as it is (``retriable`` may also raise a translated error
    itself), and so does the cancellation of the calling task; a ``CancelledError`` that a
    client library raised while the caller goes on is offered to ``retriable`` like any error.
    When time runs out, ``timed_out(last_error)`` is raised (the last error itself without
    it). ``before_retry(error, pause)`` is told of each retry (to log, or to reset state); a set
    ``stop`` event ends the wait with :class:`Stopped`.
    """
    deadline = math.inf if timeout is None else time.monotonic() + timeout
    pause = backoff.initial
    while True:
        try:
            return await attempt(deadline - time.monotonic())
        except (Exception, asyncio.CancelledError) as exc:
            if _cancelled_by_caller(exc) or not retriable(exc):
                raise
            if time.monotonic() + pause > deadline:
                if timed_out is None:
                    raise
                raise timed_out(exc) from exc
            if before_retry is not None:
                before_retry(exc, pause)
            await _pause(pause, stop, exc)
        pause = backoff.after(pause)


async def keep_trying_each(
    attempt: Callable[[list[int], float], Awaitable[Mapping[int, BaseException]]],
    items: Sequence[int],
    *,
    timeout: float | None,
    retriable: Callable[[BaseException], bool],
    backoff: Backoff = Backoff(),
    before_retry: Callable[[BaseException, float], None] | None = None,
) -> dict[int, BaseException]:
    """:func:`keep_trying` for a list sent in one go (``publish_many``): ``await
    attempt(pending, seconds_left)`` sends the pending items (by index, in order) and returns
    those that failed, with their errors. Items that failed with a retriable error are sent
    again after a pause while the ``timeout`` allows; an ``attempt`` that raises counts for
    every pending item. Returns the final error of each item that did not succeed."""
    pending = list(items)
    final: dict[int, BaseException] = {}

    async def once(left: float) -> None:
        nonlocal pending
        failed = await attempt(pending, left)
        if not failed:  # the common case: no walk over the list
            pending = []
            return
        again = [index for index in pending if index in failed and retriable(failed[index])]
        for index, error in failed.items():
            if index not in again:
                final[index] = error
        pending = again
        if again:
            raise failed[again[0]]

    try:
        await keep_trying(
            once,
            timeout=timeout,
            retriable=retriable,
            backoff=backoff,
            before_retry=before_retry,
        )
    except Exception as exc:  # out of time, or an attempt failed for good as a whole
        final.update(dict.fromkeys(pending, exc))
    return final


def _cancelled_by_caller(exc: BaseException) -> bool:
    """A cancellation of the task running keep_trying (not one a client library raised)."""
    if not isinstance(exc, asyncio.CancelledError):
        return False
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _pause(seconds: float, stop: asyncio.Event | None, cause: BaseException) -> None:
    if stop is None:
        await asyncio.sleep(seconds)
        return
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return
    raise Stopped from cause
