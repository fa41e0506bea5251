"""The delivery pipeline: one place where every policy is applied, for every adapter.

For each delivery: decode (or dead-letter / wrap what is not a CloudEvent), let the topic's
codec decode the data, check the TTL, consult the inbox, call the handler with retries and
backoff, dead-letter when attempts run out (unless the circuit breaker holds the event), and ack
only then. A crash anywhere before the ack means the broker delivers the event again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from broker import deadletter
from broker import observability as obs
from broker.context import reset_current, set_current
from broker.deadletter import describe
from broker.envelope import Event, is_json_content_type, new_id
from broker.policies import Policy
from broker.ports import Delivery, PayloadCodec, Subscription

__all__ = ["Consumer", "Handler"]

Handler = Callable[[Event], Awaitable[Any]]
Publish = Callable[[str, Event], Awaitable[None]]


class _Held(Exception):
    """Raised inside the pipeline when the circuit breaker keeps an event (never escapes)."""


class Consumer:
    """Runs one subscription: pulls deliveries and applies the policy around the handler."""

    def __init__(
        self,
        subscription: Subscription,
        handler: Handler,
        *,
        group: str,
        policy: Policy,
        publish_event: Publish,
        codec: PayloadCodec | None = None,
    ) -> None:
        self._subscription = subscription
        self._handler = handler
        self._group = group
        self._policy = policy
        self._publish_event = publish_event
        self._codec = codec
        self._log = obs.get_logger("choreo.consumer", group=group)
        self._dead_in_a_row = 0
        self._breaker_closed = asyncio.Event()
        self._breaker_closed.set()
        self._stopping = False
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._lanes: list[asyncio.Queue[Delivery | None]] = []
        self._lane_tasks: list[asyncio.Task[None]] = []
        self._next_lane = 0
        self._handled_counters: dict[str, Any] = {}
        self._handler_seconds = obs.HANDLER_SECONDS.labels(group)
        self._calls = 0
        self.handled = 0

    @property
    def subscription(self) -> Subscription:
        """The subscription this consumer reads."""
        return self._subscription

    # -- the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        """Consume until :meth:`stop`; returns after in-flight handlers finished."""
        concurrency = self._policy.concurrency
        if concurrency > 1:
            self._lanes = [asyncio.Queue(maxsize=64) for _ in range(concurrency)]
            self._lane_tasks = [asyncio.create_task(self._lane(q)) for q in self._lanes]
        try:
            async for delivery in self._subscription:
                if self._stopping:
                    break
                if concurrency == 1:
                    await self._process(delivery)
                else:
                    await self._lanes[self._lane_for(delivery, concurrency)].put(delivery)
        finally:
            for queue in self._lanes:
                await queue.put(None)
            if self._lane_tasks:
                await asyncio.gather(*self._lane_tasks, return_exceptions=True)

    def _lane_for(self, delivery: Delivery, concurrency: int) -> int:
        """Same key, same lane (so one key never runs twice at once); keyless events rotate."""
        key = delivery.event.partitionkey if delivery.event else None
        if key is None:
            self._next_lane = (self._next_lane + 1) % concurrency
            return self._next_lane
        return zlib.crc32(key.encode()) % concurrency

    async def _lane(self, queue: asyncio.Queue[Delivery | None]) -> None:
        while (delivery := await queue.get()) is not None:
            await self._process(delivery)

    def stop(self) -> None:
        """Stop pulling new deliveries; the current handler call may finish."""
        self._stopping = True

    async def drain(self, grace: float) -> None:
        """Stop, wait up to ``grace`` s for running handlers to finish, close the subscription."""
        self.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout=grace)
        await self._subscription.close()

    # -- one delivery ----------------------------------------------------------------------

    async def _process(self, delivery: Delivery) -> None:
        if self._stopping:
            return  # not started: stays unacked and is delivered again
        self._busy += 1
        self._idle.clear()
        try:
            await self._process_one(delivery)
        finally:
            self._busy -= 1
            if not self._busy:
                self._idle.set()

    async def _process_one(self, delivery: Delivery) -> None:
        topic = delivery.topic
        event = await self._decoded(delivery)
        if event is None:
            return
        if "expiration" in event.extensions and event.is_expired():
            obs.EXPIRED.labels(topic, self._group).inc()
            if self._policy.on_expired == "dlq":
                await self._dead_letter(delivery, event, deadletter.EXPIRED, "expiration passed", 0)
            else:
                obs.CONSUMED.labels(topic, self._group, "dropped").inc()
                await delivery.ack()
            return
        inbox = self._policy.inbox
        if inbox is not None and await inbox.seen(self._group, event.source, event.id):
            obs.DUPLICATES.labels(self._group).inc()
            await delivery.ack()
            return
        try:
            attempts = await self._call_with_retries(delivery, event)
        except _Held:
            return
        if attempts < 0:
            return
        if inbox is not None:
            await inbox.remember(self._group, event.source, event.id)
        self._dead_in_a_row = 0
        self.handled += 1
        counter = self._handled_counters.get(topic)
        if counter is None:
            counter = obs.CONSUMED.labels(topic, self._group, "handled")
            self._handled_counters[topic] = counter
        counter.inc()
        await delivery.ack()

    async def _decoded(self, delivery: Delivery) -> Event | None:
        """The delivery's event with its data decoded; None when it was dead-lettered."""
        event = delivery.event
        if event is None:
            error = describe(delivery.decode_error) if delivery.decode_error else "undecodable"
            if self._policy.on_undecodable == "wrap":
                return self._wrap_legacy(delivery)
            raw = Event(
                type="choreograph.undecodable",
                source=f"choreo:{delivery.topic}",
                data=delivery.body,
                datacontenttype="application/octet-stream",
            )
            await self._dead_letter(delivery, raw, deadletter.UNDECODABLE, error, 0)
            return None
        if self._codec is not None and isinstance(event.data, bytes | bytearray):
            try:
                return await self._codec.decode(delivery.topic, event)
            except ValueError as exc:
                reason = getattr(exc, "dlq_reason", deadletter.UNDECODABLE)
                await self._dead_letter(delivery, event, reason, describe(exc), 0)
                return None
        return event

    def _wrap_legacy(self, delivery: Delivery) -> Event:
        headers = delivery.headers
        content_type = headers.get("content-type") or "application/octet-stream"
        event_id = headers.get("message-id") or headers.get("Nats-Msg-Id") or new_id()
        data: Any = delivery.body
        if is_json_content_type(content_type):  # a legacy JSON body reaches the handler parsed
            try:
                data = json.loads(delivery.body)
            except ValueError:
                content_type = "application/octet-stream"
        return Event(
            type=self._policy.legacy_type,
            source=f"choreo:{delivery.topic}",
            id=event_id,
            data=data,
            datacontenttype=content_type,
        )

    async def _call_with_retries(self, delivery: Delivery, event: Event) -> int:
        """Call the handler; the number of attempts it took, or -1 if it was dead-lettered."""
        retry = self._policy.retry
        attempt = 0
        while True:
            attempt += 1
            if not self._breaker_closed.is_set():
                await self._wait_for_breaker(delivery)
            error = await self._call(event, delivery)
            if error is None:
                return attempt
            self._log.warning(
                "handler failed",
                topic=delivery.topic,
                event_id=event.id,
                correlation_id=event.correlationid,
                attempt=attempt,
                error=describe(error),
            )
            if attempt < retry.max_attempts:
                obs.RETRIES.labels(self._group).inc()
                await self._sleep_alive(delivery, retry.delay(attempt))
                continue
            if self._breaker_trips():
                await self._hold(delivery)
                attempt = retry.max_attempts - 1  # the half-open trial is one more attempt
                continue
            self._dead_in_a_row += 1
            await self._dead_letter(
                delivery, event, deadletter.HANDLER_ERROR, describe(error), attempt
            )
            return -1

    async def _call(self, event: Event, delivery: Delivery) -> BaseException | None:
        token = set_current(event, delivery)
        self._calls += 1
        timed = not self._calls & obs.LATENCY_SAMPLE_MASK  # one call in eight is timed
        started = time.perf_counter() if timed else 0.0
        try:
            await self._handler(event)
        except Exception as exc:
            return exc
        finally:
            reset_current(token)
            if timed:
                self._handler_seconds.observe(time.perf_counter() - started)
        return None

    # -- circuit breaker -------------------------------------------------------------------

    def _breaker_trips(self) -> bool:
        breaker = self._policy.breaker
        return breaker is not None and self._dead_in_a_row >= breaker.threshold

    async def _hold(self, delivery: Delivery) -> None:
        """Breaker open: keep the event, pause every lane for the cool-down, then half-open."""
        breaker = self._policy.breaker
        assert breaker is not None
        self._breaker_closed.clear()
        obs.BREAKER_OPEN.labels(self._group).set(1)
        self._log.warning("circuit breaker open", topic=delivery.topic, cooldown=breaker.cooldown)
        try:
            await self._sleep_alive(delivery, breaker.cooldown)
        finally:
            self._breaker_closed.set()
            obs.BREAKER_OPEN.labels(self._group).set(0)
        if self._stopping:
            with contextlib.suppress(Exception):
                await delivery.nack()
            raise _Held

    async def _wait_for_breaker(self, delivery: Delivery) -> None:
        while not self._breaker_closed.is_set():
            await delivery.keep_alive()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._breaker_closed.wait(), timeout=1.0)

    async def _sleep_alive(self, delivery: Delivery, seconds: float) -> None:
        """Sleep while keeping the delivery's lease alive."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0 and not self._stopping:
            await delivery.keep_alive()
            await asyncio.sleep(min(left, 1.0))

    # -- dead letters ----------------------------------------------------------------------

    async def _dead_letter(
        self, delivery: Delivery, event: Event, reason: str, error: str, attempts: int
    ) -> None:
        topic = delivery.topic
        policy = self._policy.dead_letter
        if policy.enabled:
            dead = deadletter.dead_letter(
                event, reason=reason, error=error, attempts=attempts, topic=topic, group=self._group
            )
            await self._publish_event(policy.topic_for(topic, self._group), dead)
            obs.DEAD_LETTERED.labels(topic, self._group, reason).inc()
            self._log.warning("dead-lettered", topic=topic, event_id=event.id, reason=reason)
        obs.CONSUMED.labels(topic, self._group, reason).inc()
        await delivery.ack()
