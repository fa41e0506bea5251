"""A running subscription, as :meth:`Bus.subscribe <broker.Bus.subscribe>` and
:meth:`Bus.subscribe_batch <broker.Bus.subscribe_batch>` return it."""

from __future__ import annotations

import asyncio
import contextlib

from broker.consumer import DeadLetterListener, Runner
from broker.ports import Backlog

__all__ = ["Subscriber"]


class Subscriber:
    """A running subscription; :meth:`stop` ends it, leaving unacked events to be redelivered."""

    def __init__(self, topics: tuple[str, ...], group: str, consumer: Runner) -> None:
        self.topics = topics
        self.group = group
        self._consumer = consumer
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._consumer.run(), name=f"choreo:{self.group}")

    @property
    def handled(self) -> int:
        """How many events the handler finished successfully."""
        return self._consumer.handled

    def on_dead_letter(self, listener: DeadLetterListener) -> None:
        """Call ``listener(event, dlq_topic)`` after each event this subscription dead-lettered
        (and acked): the event with its ``dlq*`` extensions (:func:`broker.deadletter.info`
        reads them) and the dead-letter topic it went to ("" when dead-lettering is disabled).
        It runs before the next delivery is taken, so it may call :meth:`stop_taking`."""
        self._consumer.on_dead_letter(listener)

    def stop_taking(self) -> None:
        """Start no handler call from now on (a handler may call it); the running ones finish
        and ack. Deliveries already taken are given back: :meth:`stop` then closes."""
        self._consumer.stop()

    async def stop(self, grace: float = 5.0) -> None:
        """Stop taking deliveries, let running handlers finish and ack (up to ``grace`` s),
        then close the subscription: what is still unacked is delivered again later."""
        await self._consumer.drain(grace)
        if self._task is not None and not self._task.done():
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), timeout=1.0)
            if not self._task.done():
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task

    async def backlog(self) -> Backlog | None:
        """Where this subscription's group stands on the broker (``None``: the backend cannot
        tell); the saga monitor's watermark follows it."""
        report = getattr(self._consumer.subscription, "backlog", None)
        if report is None:
            return None
        result: Backlog | None = await report()
        return result

    async def wait(self) -> None:
        """Wait until the subscription ends (or fails)."""
        if self._task is not None:
            await self._task
