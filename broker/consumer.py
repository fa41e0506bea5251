"""The delivery pipeline: one place where every policy is applied, for every adapter.

For each delivery: decode (or dead-letter / wrap what is not a CloudEvent), let the topic's
codec decode the data, check the TTL, consult the inbox, call the handler with retries and
backoff, dead-letter when attempts run out (unless the circuit breaker holds the event), and ack
only then. A crash anywhere before the ack means the broker delivers the event again.

:class:`Pipeline` holds those steps and the state they share (breaker, counters, idleness);
:class:`Consumer` runs it one event at a time per lane, and
:class:`~broker.batch.BatchConsumer` a batch at a time. When no policy has work to do before
the handler (no codec, no inbox, no TTL on the event, breaker closed) the handler is called
straight away: the retry machinery only starts once it failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from broker import deadletter, jsontext, tracing
from broker import observability as obs
from broker.clock import SYSTEM_CLOCK, Clock
from broker.context import NO_DELIVERIES, enter_handler, leave_handler
from broker.deadletter import describe
from broker.deferral import attempt_of, is_for_another_group, original, retry_copy
from broker.delay import DELIVER_AT, wait_seconds
from broker.envelope import Event, is_json_content_type, new_id
from broker.errors import HandlerTimeoutError
from broker.policies import Policy
from broker.ports import Delivery, PayloadCodec, Subscription
from broker.reply import REPLY_TO

if TYPE_CHECKING:
    from broker.reply import Responder
    from broker.tracing import Tracing

__all__ = ["Consumer", "Handler", "Held", "Pipeline", "Runner", "give_back"]

Handler = Callable[[Event], Awaitable[Any]]
Publish = Callable[[str, Event], Awaitable[None]]
#: Told of each event a subscription dead-lettered: the event with its ``dlq*`` extensions,
#: and the dead-letter topic it went to ("" when dead-lettering is disabled: dropped).
DeadLetterListener = Callable[[Event, str], None]

#: Deliveries a one-at-a-time consumer takes from its subscription in one call.
_TAKE = 32


async def give_back(deliveries: Sequence[Delivery]) -> None:
    """Nack deliveries that were taken but will not be handled (stopping): delivered again."""
    for delivery in deliveries:
        with contextlib.suppress(Exception):
            await delivery.nack()


class Held(Exception):
    """Raised inside a pipeline when the circuit breaker keeps events while stopping."""


class Pipeline:
    """The policy steps around a handler, and the state a subscription's lanes share."""

    def __init__(
        self,
        subscription: Subscription,
        *,
        group: str,
        policy: Policy,
        publish_event: Publish,
        codec: PayloadCodec | None = None,
        responder: Responder | None = None,
        traced: Tracing | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.subscription = subscription
        self.group = group
        self.policy = policy
        self.codec = codec
        #: What TTLs, backoff, the breaker's cool-down and ``dlqtime`` are measured on.
        self.clock = clock
        #: Sends replies to requests (events with a ``replyto``); None: never reply.
        self.responder = responder
        #: The tracer of CONSUMER spans (see :mod:`broker.tracing`); None: no tracing.
        self.traced = traced
        #: Whether every event needs a step before its handler (codec, inbox or a span).
        self.screens = codec is not None or policy.inbox is not None or traced is not None
        self._publish_event = publish_event
        self.log = obs.get_logger("choreo.consumer", group=group)
        self.dead_in_a_row = 0
        self.breaker_closed = asyncio.Event()
        self.breaker_closed.set()
        self.stopping = False
        self.busy = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self.handled = 0
        self.dead_letter_listeners: list[DeadLetterListener] = []
        self.handler_seconds = obs.HANDLER_SECONDS.labels(group)
        self._handled_counts: dict[str, obs.Count] = {}
        self.calls = 0

    # -- before the handler ----------------------------------------------------------------

    async def admit(self, delivery: Delivery) -> Event | None:
        """The event to hand to the handler; None when the delivery was settled here
        (dead-lettered, dropped as expired, skipped as a duplicate or as another group's retry
        copy). A retry copy for this group is handed over as the event it copies."""
        raw = delivery.event
        if raw is not None and is_for_another_group(raw, self.group):
            obs.CONSUMED.labels(delivery.topic, self.group, "other-group-retry").inc()
            await delivery.ack()
            return None
        event = await self._decoded(delivery)
        if event is None:
            return None
        if DELIVER_AT in event.extensions:
            if not await self._due(delivery, event):
                return None
            event = original(event)
        if "expiration" in event.extensions and event.is_expired(self.clock.now()):
            obs.EXPIRED.labels(delivery.topic, self.group).inc()
            if self.traced is not None:
                tracing.add_event("expired", {"expiration": str(event.extensions["expiration"])})
            if self.policy.on_expired == "dlq":
                made = attempt_of(raw) - 1  # the handler calls a retry copy's event had
                await self.dead_letter(
                    delivery, event, deadletter.EXPIRED, "expiration passed", made
                )
            else:
                obs.CONSUMED.labels(delivery.topic, self.group, "dropped").inc()
                await delivery.ack()
            return None
        inbox = self.policy.inbox
        if inbox is not None and await inbox.seen(self.group, event.source, event.id):
            obs.DUPLICATES.labels(self.group).inc()
            await delivery.ack()
            return None
        return event

    async def _due(self, delivery: Delivery, event: Event) -> bool:
        """Wait out what is left of the event's delivery time (the adapters hold delayed
        events; this catches a publisher's clock running behind). False: stopping, given back."""
        left = wait_seconds(event, self.clock.now().timestamp())
        if left > 0:
            await self.sleep_alive((delivery,), left)
            if self.stopping:
                await give_back((delivery,))
                return False
        return True

    async def _decoded(self, delivery: Delivery) -> Event | None:
        """The delivery's event with its data decoded; None when it was dead-lettered."""
        event = delivery.event
        if event is None:
            error = describe(delivery.decode_error) if delivery.decode_error else "undecodable"
            if self.policy.on_undecodable == "wrap":
                return self._wrap_legacy(delivery)
            raw = Event(
                type="choreograph.undecodable",
                source=f"choreo:{delivery.topic}",
                data=delivery.body,
                datacontenttype="application/octet-stream",
            )
            await self.dead_letter(delivery, raw, deadletter.UNDECODABLE, error, 0)
            return None
        if self.codec is not None and isinstance(event.data, bytes | bytearray):
            try:
                return await self.codec.decode(delivery.topic, event)
            except ValueError as exc:
                reason = getattr(exc, "dlq_reason", deadletter.UNDECODABLE)
                await self.dead_letter(delivery, event, reason, describe(exc), 0)
                return None
        return event

    def _wrap_legacy(self, delivery: Delivery) -> Event:
        headers = delivery.headers
        content_type = headers.get("content-type") or "application/octet-stream"
        event_id = headers.get("message-id") or headers.get("Nats-Msg-Id") or new_id()
        data: Any = delivery.body
        if is_json_content_type(content_type):  # a legacy JSON body reaches the handler parsed
            try:
                data = jsontext.loads(delivery.body)
            except ValueError:
                content_type = "application/octet-stream"
        return Event(
            type=self.policy.legacy_type,
            source=f"choreo:{delivery.topic}",
            id=event_id,
            data=data,
            datacontenttype=content_type,
        )

    # -- after the handler -----------------------------------------------------------------

    async def succeeded(self, delivery: Delivery, event: Event) -> None:
        """Remember, count and ack a delivery whose handler returned."""
        inbox = self.policy.inbox
        if inbox is not None:
            await inbox.remember(self.group, event.source, event.id)
        self.count_handled(delivery.topic)
        await delivery.ack()

    async def defer(self, delivery: Delivery, attempt: int, wait: float) -> bool:
        """Hand attempt ``attempt`` back to the broker as a copy of the delivery's event due in
        ``wait`` s, for this group only, then ack the delivery. False (nothing acked) when the
        event cannot be copied or the broker did not accept the copy: the caller waits."""
        event = delivery.event
        if event is None:  # a wrapped legacy message: there is no CloudEvent to send again
            return False
        now = self.clock.now()
        copy = retry_copy(event, group=self.group, attempt=attempt, delay=wait, now=now)
        try:
            await self._publish_event(delivery.topic, copy)
        except Exception as exc:  # never lose it: keep the lease and wait here instead
            self.log.warning(
                "retry not deferred, waiting in the consumer",
                topic=delivery.topic,
                event_id=event.id,
                error=describe(exc),
            )
            return False
        obs.CONSUMED.labels(delivery.topic, self.group, "deferred").inc()
        await delivery.ack()
        return True

    def count_handled(self, topic: str, events: int = 1) -> None:
        """Count events whose handler returned (the breaker's run of dead letters ends)."""
        self.dead_in_a_row = 0
        self.handled += events
        self.counter(topic).value += events

    def counter(self, topic: str) -> obs.Count:
        """The ``handled`` count of ``topic`` for this group (bound once per topic)."""
        counter = self._handled_counts.get(topic)
        if counter is None:
            counter = self._handled_counts[topic] = obs.CONSUMED.labels(
                topic, self.group, "handled"
            )
        return counter

    def failed(self, delivery: Delivery, event: Event, error: BaseException, attempt: int) -> None:
        """Log a failed handler attempt."""
        self.log.warning(
            "handler failed",
            topic=delivery.topic,
            event_id=event.id,
            correlation_id=event.correlationid,
            attempt=attempt,
            error=describe(error),
        )

    async def dead_letter(
        self, delivery: Delivery, event: Event, reason: str, error: str, attempts: int
    ) -> None:
        """Publish ``event`` to its dead-letter topic (when enabled), count it, ack it, then tell
        the listeners."""
        topic = delivery.topic
        policy = self.policy.dead_letter
        where = policy.topic_for(topic, self.group) if policy.enabled else ""
        if self.traced is not None:
            tracing.add_event(
                "dead-lettered",
                {"reason": reason, "error": error, "attempts": attempts, "dlq": where},
                error=True,
            )
        dead = deadletter.dead_letter(
            event,
            reason=reason,
            error=error,
            attempts=attempts,
            topic=topic,
            group=self.group,
            time=self.clock.now(),
        )
        if policy.enabled:
            await self._publish_event(where, dead)
            obs.DEAD_LETTERED.labels(topic, self.group, reason).inc()
            self.log.warning("dead-lettered", topic=topic, event_id=event.id, reason=reason)
        if (
            self.responder is not None
            and REPLY_TO in event.extensions
            and reason != deadletter.EXPIRED
        ):
            await self.responder.reply_error(event, error)
        obs.CONSUMED.labels(topic, self.group, reason).inc()
        await delivery.ack()
        for listener in self.dead_letter_listeners:
            listener(dead, where)

    async def call(self, handler: Callable[[Any], Awaitable[Any]], argument: Any) -> Any:
        """``await handler(argument)`` (returning what it returns), cancelled past the
        policy's ``handler_timeout`` (raising :class:`~broker.errors.HandlerTimeoutError`)."""
        timeout = self.policy.handler_timeout
        if timeout is None:
            return await handler(argument)
        try:
            async with asyncio.timeout(timeout) as scope:
                return await handler(argument)
        except TimeoutError as exc:
            if not scope.expired():
                raise  # the handler's own TimeoutError
            raise HandlerTimeoutError(
                f"the handler did not finish within handler_timeout={timeout:g}s"
            ) from exc

    async def shut_out(self, deliveries: Sequence[Delivery]) -> bool:
        """While stopping, a failure is not the handler's: give the deliveries back (delivered
        again later, neither retried now nor dead-lettered). Whether it did."""
        if not self.stopping:
            return False
        await give_back(deliveries)
        return True

    def start_timer(self) -> float:
        """``time.perf_counter()`` for the handler calls that are timed (one in eight), else 0."""
        self.calls += 1
        return 0.0 if self.calls & obs.LATENCY_SAMPLE_MASK else time.perf_counter()

    # -- circuit breaker and waiting -------------------------------------------------------

    def breaker_trips(self) -> bool:
        """Whether one more dead letter would exceed the breaker's threshold."""
        breaker = self.policy.breaker
        return breaker is not None and self.dead_in_a_row >= breaker.threshold

    async def hold(self, deliveries: Sequence[Delivery], topic: str) -> None:
        """Breaker open: keep the events, pause every lane for the cool-down, then half-open.
        Raises :class:`Held` (after giving the events back) when the subscription stops."""
        breaker = self.policy.breaker
        assert breaker is not None
        self.breaker_closed.clear()
        obs.BREAKER_OPEN.labels(self.group).set(1)
        self.log.warning("circuit breaker open", topic=topic, cooldown=breaker.cooldown)
        try:
            await self.sleep_alive(deliveries, breaker.cooldown)
        finally:
            self.breaker_closed.set()
            obs.BREAKER_OPEN.labels(self.group).set(0)
        if self.stopping:
            for delivery in deliveries:
                with contextlib.suppress(Exception):
                    await delivery.nack()
            raise Held

    async def wait_for_breaker(self, deliveries: Sequence[Delivery]) -> None:
        """Wait while another lane holds the breaker open, keeping leases alive."""
        while not self.breaker_closed.is_set():
            for delivery in deliveries:
                await delivery.keep_alive()
            await self.clock.wait(self.breaker_closed, 1.0)

    async def sleep_alive(self, deliveries: Sequence[Delivery], seconds: float) -> None:
        """Sleep on the pipeline's clock while keeping the deliveries' leases alive."""
        clock = self.clock
        deadline = clock.monotonic() + seconds
        while (left := deadline - clock.monotonic()) > 0 and not self.stopping:
            for delivery in deliveries:
                await delivery.keep_alive()
            await clock.sleep(min(left, 1.0))

    # -- stopping --------------------------------------------------------------------------

    def halted(self) -> bool:
        """Whether the subscription is stopping (no new delivery may start)."""
        return self.stopping

    async def drain(self, grace: float) -> None:
        """Stop, wait up to ``grace`` s for running handlers to finish, close the subscription."""
        self.stopping = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.idle.wait(), timeout=grace)
        await self.subscription.close()


class Runner:
    """What runs a subscription for a :class:`~broker.Subscriber`: a pipeline and a handler."""

    def __init__(
        self,
        subscription: Subscription,
        *,
        group: str,
        policy: Policy,
        publish_event: Publish,
        codec: PayloadCodec | None = None,
        responder: Responder | None = None,
        traced: Tracing | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._pipeline = Pipeline(
            subscription,
            group=group,
            policy=policy,
            publish_event=publish_event,
            codec=codec,
            responder=responder,
            traced=traced,
            clock=clock,
        )

    @property
    def subscription(self) -> Subscription:
        """The subscription this consumer reads."""
        return self._pipeline.subscription

    @property
    def handled(self) -> int:
        """How many events the handler finished successfully."""
        return self._pipeline.handled

    def on_dead_letter(self, listener: DeadLetterListener) -> None:
        """Call ``listener`` after each event this consumer dead-lettered (and acked)."""
        self._pipeline.dead_letter_listeners.append(listener)

    def stop(self) -> None:
        """Stop pulling new deliveries; the current handler call may finish."""
        self._pipeline.stopping = True

    async def drain(self, grace: float) -> None:
        """Stop, wait up to ``grace`` s for running handlers to finish, close the subscription."""
        await self._pipeline.drain(grace)

    async def run(self) -> None:
        """Consume until stopped or the subscription ends."""
        raise NotImplementedError


class Consumer(Runner):
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
        responder: Responder | None = None,
        traced: Tracing | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        super().__init__(
            subscription,
            group=group,
            policy=policy,
            publish_event=publish_event,
            codec=codec,
            responder=responder,
            traced=traced,
            clock=clock,
        )
        self._handler = handler
        self._lanes: list[asyncio.Queue[Delivery | None]] = []
        self._next_lane = 0

    # -- the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        """Consume until :meth:`stop`; returns after in-flight handlers finished."""
        pipeline = self._pipeline
        concurrency = pipeline.policy.concurrency
        if concurrency == 1:
            while not pipeline.stopping:  # what is ready, a few at a time: fewer awaits
                deliveries = await pipeline.subscription.take(_TAKE, 0.0)
                if not deliveries:
                    return
                if not await self._run_all(deliveries):
                    return
            return
        self._lanes = [asyncio.Queue(maxsize=64) for _ in range(concurrency)]
        lanes = [asyncio.create_task(self._lane(q)) for q in self._lanes]
        try:
            async for delivery in self._pipeline.subscription:
                if self._pipeline.stopping:
                    break
                await self._lanes[self._lane_for(delivery, concurrency)].put(delivery)
        finally:
            for queue in self._lanes:
                await queue.put(None)
            await asyncio.gather(*lanes, return_exceptions=True)

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

    # -- one delivery ----------------------------------------------------------------------

    async def _run_all(self, deliveries: Sequence[Delivery]) -> bool:
        """Handle ``deliveries`` in order (busy meanwhile); False when stopping gave the rest
        back."""
        pipeline = self._pipeline
        pipeline.busy += 1
        pipeline.idle.clear()
        try:
            return await self._run(deliveries)
        finally:
            pipeline.busy -= 1
            if not pipeline.busy:
                pipeline.idle.set()

    async def _run(self, deliveries: Sequence[Delivery]) -> bool:
        """:meth:`_run_all`'s loop. The common case is inlined, once per event: no policy step
        before the handler (no codec, inbox or span, no TTL or delivery time on the event,
        breaker closed), so call it, count and ack; the retry machinery only starts once it
        failed."""
        pipeline = self._pipeline
        handler, responder, breaker = self._handler, pipeline.responder, pipeline.breaker_closed
        timeout = pipeline.policy.handler_timeout
        call = handler if timeout is None else functools.partial(pipeline.call, handler)
        counted: tuple[str, obs.Count] = ("", obs.Count())
        plain = not pipeline.screens and breaker.is_set()  # again after each policy step
        for index, delivery in enumerate(deliveries):
            if pipeline.stopping:
                await give_back(deliveries[index:])
                return False
            event = delivery.event
            if (
                not plain
                or event is None
                or "expiration" in event.extensions
                or DELIVER_AT in event.extensions
            ):
                await self._screened(delivery)
                plain = not pipeline.screens and breaker.is_set()
                continue
            token = enter_handler((event, delivery, NO_DELIVERIES))
            pipeline.calls += 1
            started = 0.0 if pipeline.calls & obs.LATENCY_SAMPLE_MASK else time.perf_counter()
            try:
                result = await call(event)
                if REPLY_TO in event.extensions and responder is not None:
                    await responder.reply(event, result)
            except Exception as exc:
                error: BaseException | None = exc
            else:
                error = None
            finally:
                leave_handler(token)
                if started:
                    pipeline.handler_seconds.observe(time.perf_counter() - started)
            if error is not None:
                retried = await self._retried(delivery, event, error)
                plain = not pipeline.screens and breaker.is_set()
                if not retried:
                    continue
            if counted[0] != delivery.topic:
                counted = (delivery.topic, pipeline.counter(delivery.topic))
            pipeline.dead_in_a_row = 0
            pipeline.handled += 1
            counted[1].value += 1
            ack_now = delivery.ack_now
            if ack_now is None:
                await delivery.ack()
            else:  # a backend whose ack never waits: no coroutine
                ack_now()
        return True

    async def _process(self, delivery: Delivery) -> None:
        if not self._pipeline.stopping:  # else not started: unacked, delivered again
            await self._run_all((delivery,))

    async def _screened(self, delivery: Delivery) -> None:
        """A delivery some policy step must see before (and after) the handler, inside its
        CONSUMER span when tracing (not another group's retry copy: no handler sees it)."""
        traced = self._pipeline.traced
        event = delivery.event
        topic, group = delivery.topic, self._pipeline.group
        if traced is None or event is None or is_for_another_group(event, group):
            await self._admitted(delivery)
            return
        with tracing.consumer_span(traced.tracer, traced.system, topic, group, event):
            await self._admitted(delivery)

    async def _admitted(self, delivery: Delivery) -> None:
        pipeline = self._pipeline
        event = await pipeline.admit(delivery)
        if event is None:
            return
        if pipeline.breaker_closed.is_set():
            error = await self._call(event, delivery)
        else:
            error = _WAIT_FOR_BREAKER
        if error is None or await self._retried(delivery, event, error):
            await pipeline.succeeded(delivery, event)

    async def _retried(self, delivery: Delivery, event: Event, error: BaseException) -> bool:
        """Whether the policy's later attempts succeeded (False: dead-lettered, deferred or
        held)."""
        try:
            return await self._retry(delivery, event, error)
        except Held:
            return False

    async def _retry(self, delivery: Delivery, event: Event, error: BaseException) -> bool:
        """Handle a failed first attempt by the policy: whether a later attempt succeeded
        (False: the event was dead-lettered, deferred as a retry copy, or given back because
        the subscription stops)."""
        pipeline = self._pipeline
        retry = pipeline.policy.retry
        attempt = attempt_of(delivery.event)
        while True:
            if error is _WAIT_FOR_BREAKER:
                await pipeline.wait_for_breaker((delivery,))
                failure = await self._call(event, delivery)
                if failure is None:
                    return True
                error = failure
            if await pipeline.shut_out((delivery,)):
                return False
            pipeline.failed(delivery, event, error, attempt)
            if attempt < retry.max_attempts:
                obs.RETRIES.labels(pipeline.group).inc()
                wait = retry.delay(attempt)
                deferred = retry.defers(wait) and await pipeline.defer(delivery, attempt + 1, wait)
                if pipeline.traced is not None:
                    tracing.add_event(
                        "retry",
                        {
                            "attempt": attempt,
                            "error": describe(error),
                            "delay": wait,
                            "deferred": deferred,
                        },
                    )
                if deferred:
                    return False
                await pipeline.sleep_alive((delivery,), wait)
                if await pipeline.shut_out((delivery,)):
                    return False
                attempt += 1
                error = _WAIT_FOR_BREAKER
                continue
            if pipeline.breaker_trips():
                await pipeline.hold((delivery,), delivery.topic)
                attempt = retry.max_attempts  # the half-open trial is one more attempt
                error = _WAIT_FOR_BREAKER
                continue
            pipeline.dead_in_a_row += 1
            await pipeline.dead_letter(
                delivery, event, deadletter.HANDLER_ERROR, describe(error), attempt
            )
            return False

    async def _call(self, event: Event, delivery: Delivery) -> BaseException | None:
        pipeline = self._pipeline
        token = enter_handler((event, delivery, NO_DELIVERIES))
        started = pipeline.start_timer()
        try:
            result = await pipeline.call(self._handler, event)
            if REPLY_TO in event.extensions and pipeline.responder is not None:
                await pipeline.responder.reply(event, result)
        except Exception as exc:
            return exc
        finally:
            leave_handler(token)
            if started:
                pipeline.handler_seconds.observe(time.perf_counter() - started)
        return None


class _NotCalledYet(Exception):
    """Marks an attempt that is still to be made (after waiting for the breaker)."""


_WAIT_FOR_BREAKER = _NotCalledYet()
