"""Batches: what :meth:`Bus.publish_many <broker.Bus.publish_many>` reports, and the consumer
behind :meth:`Bus.subscribe_batch <broker.Bus.subscribe_batch>`.

A batch handler gets a list of events and keeps every per-event guarantee of a plain handler:

* undecodable and expired events are dead-lettered (or dropped, by policy) before the handler,
  and the inbox skips duplicates (within the batch too), so the list holds only events to handle;
* the handler returning means every event of the list is handled: each is remembered by the
  inbox and acked, never before;
* raising :class:`PartialFailure` names the events that failed (by id); the others count as
  handled and are acked, the failed ones are retried, as a smaller batch, with the policy's
  backoff, and dead-lettered one by one when their attempts run out;
* raising anything else fails every event of the list that way;
* the circuit breaker counts dead letters event by event; once it opens, the events still to be
  dead-lettered are held for the cool-down and then tried again together.

Inside a batch handler :func:`broker.context.current_deliveries` gives the broker messages of
the list (topic, position, redelivery count), in the same order.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from typing import Any, overload

from broker import deadletter, tracing
from broker import observability as obs
from broker.clock import SYSTEM_CLOCK, Clock
from broker.consumer import Held, Publish, Runner, give_back
from broker.context import reset_current, set_current_batch
from broker.deadletter import describe
from broker.deferral import attempt_of
from broker.delay import DELIVER_AT
from broker.envelope import Event
from broker.errors import PublishError
from broker.policies import Policy
from broker.ports import Delivery, PayloadCodec, Subscription
from broker.tracing import Tracing

__all__ = ["BatchConsumer", "BatchHandler", "Outcome", "PartialFailure", "PublishResult"]

BatchHandler = Callable[[list[Event]], Awaitable[Any]]


# -- publishing ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one event of a ``publish_many`` call: ``error`` is None when the broker
    durably accepted ``event`` (as sent, after stamping and encoding)."""

    event: Event
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        """Whether the broker durably accepted the event."""
        return self.error is None


class PublishResult(Sequence[Outcome]):
    """The outcomes of ``publish_many``, one per event, in the order they were given.

    It keeps the events and their errors side by side; an :class:`Outcome` is made when one
    is asked for (a list that all went through makes none)."""

    def __init__(self, topic: str, outcomes: Sequence[Outcome]) -> None:
        self.topic = topic
        self._cached: tuple[Outcome, ...] | None = tuple(outcomes)
        self._events = [outcome.event for outcome in self._cached]
        self._errors = [outcome.error for outcome in self._cached]

    @classmethod
    def of(
        cls, topic: str, events: Sequence[Event], errors: Sequence[Exception | None]
    ) -> PublishResult:
        """The result of ``events`` with their ``errors`` (None: published), index by index."""
        if len(events) != len(errors):
            raise ValueError(f"{len(events)} events but {len(errors)} outcomes")
        result = cls.__new__(cls)
        result.topic = topic
        result._cached = None
        result._events = list(events)
        result._errors = list(errors)
        return result

    def _outcomes(self) -> tuple[Outcome, ...]:
        if self._cached is None:
            self._cached = tuple(map(Outcome, self._events, self._errors))
        return self._cached

    @overload
    def __getitem__(self, index: int) -> Outcome: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Outcome]: ...

    def __getitem__(self, index: int | slice) -> Outcome | Sequence[Outcome]:
        return self._outcomes()[index]

    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Iterator[Outcome]:
        return iter(self._outcomes())

    def __repr__(self) -> str:
        return f"<PublishResult {self.topic}: {len(self.published)} of {len(self)} published>"

    @property
    def ok(self) -> bool:
        """Whether every event was published."""
        return self._errors.count(None) == len(self._errors)

    @property
    def published(self) -> list[Event]:
        """The events the broker accepted, as sent, in order."""
        if self.ok:
            return list(self._events)
        return [
            event for event, error in zip(self._events, self._errors, strict=True) if error is None
        ]

    @property
    def failed(self) -> list[Outcome]:
        """The outcomes of the events that were not published, each with its error."""
        if self.ok:
            return []
        return [outcome for outcome in self._outcomes() if outcome.error is not None]

    def raise_for_failures(self) -> None:
        """Raise :class:`~broker.errors.PublishError` (from the first error) unless every
        event was published."""
        failed = self.failed
        if failed:
            first, error = failed[0].event, failed[0].error
            assert error is not None
            raise PublishError(
                f"{len(failed)} of {len(self)} events were not published to {self.topic}; "
                f"the first, {first.id}: {describe(error)}"
            ) from error


# -- consuming ----------------------------------------------------------------------------------


class PartialFailure(Exception):
    """Raised by a batch handler when only some events of its batch failed.

    ``failures`` maps the id of each failed event to what went wrong; the other events of the
    batch count as handled. ``raise PartialFailure({event.id: error})``
    """

    def __init__(self, failures: Mapping[str, BaseException]) -> None:
        super().__init__(f"{len(failures)} event(s) of the batch failed")
        self.failures = dict(failures)


_Item = tuple[Delivery, Event]


class BatchConsumer(Runner):
    """Runs one batch subscription: takes up to ``max_batch`` deliveries (waiting up to
    ``max_wait`` s for more once one is there) and applies the policy to each event."""

    def __init__(
        self,
        subscription: Subscription,
        handler: BatchHandler,
        *,
        group: str,
        policy: Policy,
        publish_event: Publish,
        codec: PayloadCodec | None = None,
        max_batch: int = 100,
        max_wait: float = 0.01,
        traced: Tracing | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        super().__init__(
            subscription,
            group=group,
            policy=policy,
            publish_event=publish_event,
            codec=codec,
            traced=traced,
            clock=clock,
        )
        self._handler = handler
        self._max_batch = max_batch
        self._max_wait = max_wait
        merge = getattr(subscription, "merge_partitions", None)
        if merge is not None:  # batches span the partitions (see broker.ports.Subscription)
            merge()

    async def run(self) -> None:
        """Consume batches until stopped or the subscription ends. The next batch is taken
        while one is handled (a handler that awaits, e.g. a commit in a thread, lets the
        broker's messages be read and decoded meanwhile); it is admitted and handled only
        after this one is done, acked or dead-lettered, so batches keep their order."""
        pipeline = self._pipeline
        ahead: asyncio.Future[list[Delivery]] | None = None
        try:
            while not pipeline.halted():
                deliveries = await (ahead if ahead is not None else self._take())
                ahead = None
                if not deliveries:
                    return
                if pipeline.halted():  # not started: given back, delivered again
                    await give_back(deliveries)
                    return
                ahead = asyncio.ensure_future(self._take())
                await self._run_batch(deliveries)
        finally:
            if ahead is not None:
                await _give_back_ahead(ahead)

    def _take(self) -> Coroutine[Any, Any, list[Delivery]]:
        return self._pipeline.subscription.take(self._max_batch, self._max_wait)

    async def _run_batch(self, deliveries: list[Delivery]) -> None:
        pipeline = self._pipeline
        pipeline.busy += 1
        pipeline.idle.clear()
        try:
            admitted = await self._admit(deliveries)
            if admitted:
                await self._handle(admitted)
        except Held:
            pass
        finally:
            pipeline.busy -= 1
            if not pipeline.busy:
                pipeline.idle.set()

    async def _admit(self, deliveries: Sequence[Delivery]) -> list[_Item]:
        """The (delivery, event) pairs to hand to the handler, after the TTL, decoding and
        inbox steps (an event twice in one batch is a duplicate too)."""
        pipeline = self._pipeline
        dedup = pipeline.policy.inbox is not None
        seen: set[tuple[str, str]] = set()
        admitted: list[_Item] = []
        for delivery in deliveries:
            event = delivery.event
            if (
                event is None
                or pipeline.screens
                or "expiration" in event.extensions
                or DELIVER_AT in event.extensions
            ):
                event = await pipeline.admit(delivery)
                if event is None:
                    continue
            if dedup:
                key = (event.source, event.id)
                if key in seen:
                    obs.DUPLICATES.labels(pipeline.group).inc()
                    await delivery.ack()
                    continue
                seen.add(key)
            admitted.append((delivery, event))
        return admitted

    async def _handle(self, pending: list[_Item]) -> None:
        """Call the handler with ``pending`` until every event is handled, deferred or
        dead-lettered. Each event counts its own attempts (a retry copy continues its count)."""
        pipeline = self._pipeline
        attempts: list[int] | None = None  # read once a call failed (the common call does not)
        while True:
            if not pipeline.breaker_closed.is_set():
                await pipeline.wait_for_breaker([d for d, _ in pending])
            failures = await self._call(pending)
            done = [item for index, item in enumerate(pending) if index not in failures]
            if done:
                await self._succeeded(done)
            if not failures:
                return
            if attempts is None:
                attempts = [attempt_of(delivery.event) for delivery, _ in pending]
            order = sorted(failures)
            pending = [pending[index] for index in order]
            attempts = [attempts[index] for index in order]
            if await pipeline.shut_out([delivery for delivery, _ in pending]):
                return
            errors = [failures[index] for index in order]
            for (delivery, event), error, attempt in zip(pending, errors, attempts, strict=True):
                pipeline.failed(delivery, event, error, attempt)
            retrying, held = await self._settle(pending, errors, attempts)
            if retrying is None:  # the subscription stops: given back
                return
            pending = [item for item, _ in retrying] + held
            last = pipeline.policy.retry.max_attempts  # a held event's half-open trial
            attempts = [attempt for _, attempt in retrying] + [last] * len(held)
            if held:
                await pipeline.hold([d for d, _ in pending], held[0][0].topic)
            if not pending:
                return

    async def _settle(
        self, pending: list[_Item], errors: list[BaseException], attempts: list[int]
    ) -> tuple[list[tuple[_Item, int]] | None, list[_Item]]:
        """After failed attempts: dead-letter the exhausted events, defer or wait out the
        backoff of the others. The events to call again with their next attempt (None when
        stopping gave them back) and those the breaker holds."""
        pipeline = self._pipeline
        retry = pipeline.policy.retry
        exhausted = [i for i, attempt in enumerate(attempts) if attempt >= retry.max_attempts]
        held = await self._dead_letter(
            [pending[i] for i in exhausted],
            [errors[i] for i in exhausted],
            [attempts[i] for i in exhausted],
        )
        retrying = [(pending[i], a) for i, a in enumerate(attempts) if a < retry.max_attempts]
        if not retrying:
            return [], held
        obs.RETRIES.labels(pipeline.group).inc(len(retrying))
        wait = retry.delay(min(attempt for _, attempt in retrying))
        if retry.defers(wait):
            retrying = [
                (item, attempt)
                for item, attempt in retrying
                if not await pipeline.defer(item[0], attempt + 1, wait)
            ]
            if not retrying:
                return [], held
        deliveries = [d for (d, _), _ in retrying] + [d for d, _ in held]
        await pipeline.sleep_alive(deliveries, wait)
        if await pipeline.shut_out(deliveries):
            return None, []
        return [(item, attempt + 1) for item, attempt in retrying], held

    async def _dead_letter(
        self, pending: list[_Item], errors: list[BaseException], attempts: list[int]
    ) -> list[_Item]:
        """Dead-letter the exhausted events in order; those left once the breaker trips."""
        pipeline = self._pipeline
        for index, ((delivery, event), error) in enumerate(zip(pending, errors, strict=True)):
            if pipeline.breaker_trips():
                return pending[index:]
            pipeline.dead_in_a_row += 1
            await pipeline.dead_letter(
                delivery, event, deadletter.HANDLER_ERROR, describe(error), attempts[index]
            )
        return []

    async def _call(self, pending: list[_Item]) -> dict[int, BaseException]:
        """One handler call (in a CONSUMER span linked to each event's trace, when tracing);
        the failed events by their index in ``pending``."""
        traced = self._pipeline.traced
        if traced is None:
            return await self._called(pending)
        topic, events = pending[0][0].topic, [event for _, event in pending]
        group = self._pipeline.group
        with tracing.batch_span(traced.tracer, traced.system, topic, group, events) as span:
            failures = await self._called(pending)
            if failures:
                error = next(iter(failures.values()))
                span.set_status(tracing.error_status(f"{len(failures)} failed: {error!r}"))
            return failures

    async def _called(self, pending: list[_Item]) -> dict[int, BaseException]:
        pipeline = self._pipeline
        token = set_current_batch(tuple(delivery for delivery, _ in pending))
        started = pipeline.start_timer()
        try:
            await pipeline.call(self._handler, [event for _, event in pending])
        except PartialFailure as partial:
            return self._indexed(pending, partial)
        except Exception as exc:
            return dict.fromkeys(range(len(pending)), exc)
        finally:
            reset_current(token)
            if started:
                pipeline.handler_seconds.observe(time.perf_counter() - started)
        return {}

    def _indexed(self, pending: list[_Item], partial: PartialFailure) -> dict[int, BaseException]:
        failures = partial.failures
        found = {i: failures[e.id] for i, (_, e) in enumerate(pending) if e.id in failures}
        unknown = set(failures) - {e.id for _, e in pending}
        if unknown:
            self._pipeline.log.warning(
                "PartialFailure names events not in the batch; ignored", event_ids=sorted(unknown)
            )
        return found

    async def _succeeded(self, done: list[_Item]) -> None:
        """Remember, count and ack handled events (acks go out together where they can)."""
        pipeline = self._pipeline
        inbox = pipeline.policy.inbox
        topics: dict[str, int] = {}
        for delivery, event in done:
            if inbox is not None:
                await inbox.remember(pipeline.group, event.source, event.id)
            topics[delivery.topic] = topics.get(delivery.topic, 0) + 1
        for topic, count in topics.items():
            pipeline.count_handled(topic, count)
        await pipeline.subscription.ack_many([delivery for delivery, _ in done])


async def _give_back_ahead(ahead: asyncio.Future[list[Delivery]]) -> None:
    """Stopping: the batch taken ahead is given back (redelivered), or its take cancelled
    (what it had taken stays unacked: delivered again once the subscription closes)."""
    if not ahead.done():
        ahead.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await give_back(await ahead)
