"""Request/reply over the bus: a request is an event with a reply address, a reply is an event
caused by it.

Wire terms (CloudEvents extensions):

* ``replyto`` on a request: the topic its replies go to. Each requesting :class:`~broker.Bus`
  has one reply topic, ``_reply.<32 hex digits>``, read by a group of its own.
* A reply carries ``causationid`` = the request's ``id`` (how the requester matches it), the
  request's ``correlationid`` and a child ``traceparent`` of the request's trace. Its type is
  the request's type with ``.reply`` appended, unless the handler returned an
  :class:`~broker.Event`, which is sent as it is (with those extensions added).
* An **error reply** is sent when the handler of a request fails for good (its retries are
  exhausted and the request is dead-lettered, or it could not be decoded): type
  ``<request type>.error``, extension ``replyerror`` = ``Type: message`` of the error, no data.

:class:`Responder` is what a subscription uses to reply; :class:`Requester` is what
:meth:`Bus.request <broker.Bus.request>` uses to wait for replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from broker import observability as obs
from broker.context import new_traceparent
from broker.envelope import Event, ExtensionValue
from broker.errors import ClosedError, RequestFailedError, RequestTimeoutError
from broker.tracing import current_traceparent

if TYPE_CHECKING:
    from broker.ports import Adapter, Subscription

__all__ = [
    "REPLY_ERROR",
    "REPLY_GROUP",
    "REPLY_TO",
    "REPLY_TOPIC_PREFIX",
    "Requester",
    "Responder",
    "is_reply_topic",
]

#: The request's reply address (a topic).
REPLY_TO = "replyto"
#: On an error reply: ``Type: message`` of the handler's error.
REPLY_ERROR = "replyerror"
#: Reply topics are ``_reply.<hex>``: one per requesting bus.
REPLY_TOPIC_PREFIX = "_reply."
#: The group that reads a reply topic (the topic is unique, so is the group's position).
REPLY_GROUP = "_reply"

Publish = Callable[[str, Event], Awaitable[None]]
_log = obs.get_logger("choreo.reply")


def is_reply_topic(topic: str) -> bool:
    """Whether ``topic`` is a reply topic (for listings that hide them)."""
    return topic.startswith(REPLY_TOPIC_PREFIX)


def _reply_extensions(request: Event) -> dict[str, ExtensionValue]:
    extensions: dict[str, ExtensionValue] = {
        "causationid": request.id,
        "traceparent": current_traceparent() or new_traceparent(request.traceparent),
    }
    if request.correlationid is not None:
        extensions["correlationid"] = request.correlationid
    if request.partitionkey is not None:
        extensions["partitionkey"] = request.partitionkey
    return extensions


class Responder:
    """Sends the replies of one bus's handlers (the reply's ``source`` is the bus's)."""

    def __init__(self, source: str, publish_event: Publish) -> None:
        self.source = source
        self._publish_event = publish_event

    def reply_for(self, request: Event, result: Any) -> Event:
        """The reply to ``request`` for a handler's return value (or returned Event)."""
        extensions = _reply_extensions(request)
        if isinstance(result, Event):
            return result.replace(extensions={**result.extensions, **extensions})
        return Event(
            type=f"{request.type}.reply", source=self.source, data=result, extensions=extensions
        )

    async def reply(self, request: Event, result: Any) -> None:
        """Send the reply of a handler that returned ``result``; a failure raises (the
        handler's attempt then counts as failed and is retried)."""
        await self._publish_event(
            str(request.extensions[REPLY_TO]), self.reply_for(request, result)
        )

    async def reply_error(self, request: Event, error: str) -> None:
        """Send an error reply (``replyerror`` = ``error``); a failure is logged, not raised."""
        extensions = _reply_extensions(request)
        extensions[REPLY_ERROR] = error.splitlines()[0] if error else "error"
        reply = Event(type=f"{request.type}.error", source=self.source, extensions=extensions)
        try:
            await self._publish_event(str(request.extensions[REPLY_TO]), reply)
        except Exception as exc:
            _log.warning("error reply not sent", request_id=request.id, error=repr(exc))


class Requester:
    """One bus's reply topic and the requests waiting on it."""

    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter
        self.topic = f"{REPLY_TOPIC_PREFIX}{uuid.uuid4().hex}"
        self._waiting: dict[str, asyncio.Future[Event]] = {}
        self._subscription: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    async def open(self) -> None:
        """Subscribe to the reply topic (once); returns when replies to it will be received."""
        if self._task is not None:
            return
        async with self._lock:
            if self._closed:
                raise ClosedError("this Bus was stopped; create a new one")
            if self._task is None:
                self._subscription = await self.adapter.subscribe([self.topic], REPLY_GROUP)
                self._task = asyncio.create_task(self._listen(), name=f"choreo:{self.topic}")

    def expect(self, request_id: str) -> asyncio.Future[Event]:
        """A future that the reply to ``request_id`` completes."""
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        return future

    def forget(self, request_id: str) -> None:
        """Stop waiting for the reply to ``request_id`` (its publish failed)."""
        future = self._waiting.pop(request_id, None)
        if future is not None:
            future.cancel()

    async def wait(
        self, future: asyncio.Future[Event], request: Event, topic: str, timeout: float
    ) -> Event:
        """The reply ``future`` gets within ``timeout`` s; raise for a timeout or an error."""
        try:
            reply = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise RequestTimeoutError(
                f"no reply to {request.type} {request.id} on {topic} within {timeout:g}s; "
                f"is a subscriber of {topic} running, and does the request reach it?"
            ) from None
        finally:
            self._waiting.pop(request.id, None)
        error = reply.extensions.get(REPLY_ERROR)
        if error is not None:
            raise RequestFailedError(
                f"the handler of {request.type} on {topic} failed: {error}", reply
            )
        return reply

    async def _listen(self) -> None:
        subscription = self._subscription
        assert subscription is not None
        async for delivery in subscription:
            event = delivery.event
            cause = event.causationid if event is not None else None
            future = self._waiting.get(cause) if cause is not None else None
            if future is not None and not future.done():
                assert event is not None
                future.set_result(event)
            await delivery.ack()  # a late, duplicate or stray reply is dropped

    async def close(self) -> None:
        """Stop listening; requests still waiting fail with ClosedError."""
        self._closed = True
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(ClosedError("the Bus stopped while waiting for a reply"))
        self._waiting.clear()
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            await self._delete_topic()

    async def _delete_topic(self) -> None:
        """Delete the reply topic where the backend can (an optional adapter method)."""
        delete = getattr(self.adapter, "delete_topic", None)
        if delete is None:
            return
        try:
            await delete(self.topic)
        except Exception as exc:  # stopping goes on; the topic stays behind
            _log.warning("reply topic not deleted", topic=self.topic, error=repr(exc))
