"""What a bus says it publishes and consumes, recorded without sending anything.

:meth:`broker.Bus.publisher` declares a publication (topic, CloudEvents type, payload schema)
and returns a :class:`Publisher`, a handle that publishes that kind of event; every
subscription (``subscribe`` or the ``subscriber`` decorator) is declared too. The
:class:`Declarations` of a bus are what :mod:`broker.asyncapi` turns into a document.

A payload schema (:data:`PayloadSchema`) is a pydantic model class, a JSON Schema (a mapping) or
the name of a registry subject. Declaring one does not validate anything on the wire: a
registry codec (``schemas.SchemaCodec``) does that; a :class:`Publisher` whose schema is a
pydantic model only validates and dumps the data it is given.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, ParamSpec, TypeAlias, TypeGuard, overload

from broker.envelope import Event
from broker.errors import ConfigurationError, PayloadError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from broker.bus import Bus

__all__ = [
    "Declarations",
    "PayloadSchema",
    "PublicationSpec",
    "Publisher",
    "SubscriptionSpec",
    "check_schema",
]

#: A pydantic model class, a JSON Schema document, or the name of a registry subject.
PayloadSchema: TypeAlias = "type[BaseModel] | Mapping[str, Any] | str"

P = ParamSpec("P")


def _is_model_class(schema: object) -> TypeGuard[type[BaseModel]]:
    """Whether ``schema`` is a pydantic model class (pydantic is imported only if it may be)."""
    if not isinstance(schema, type):
        return False
    from pydantic import BaseModel

    return issubclass(schema, BaseModel)


def check_schema(schema: object, where: str) -> None:
    """Refuse a ``schema=`` that is none of the three kinds a :data:`PayloadSchema` may be."""
    if schema is None or _is_model_class(schema) or isinstance(schema, Mapping):
        return
    if isinstance(schema, str) and schema.strip():
        return
    raise ConfigurationError(
        f"schema={schema!r} for {where} is not a payload schema; give a pydantic model class, "
        "a JSON Schema dict or the name of a registry subject"
    )


def _first_errors(exc: ValueError) -> str:
    """The first problems of a pydantic ValidationError on one line (``lines.0.qty: ...``)."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    shown = [f"{'.'.join(map(str, err['loc'])) or 'data'}: {err['msg']}" for err in errors()[:3]]
    return "; ".join(shown)


def _summary(obj: object) -> str | None:
    """The first line of an object's docstring, if it has one."""
    doc = inspect.getdoc(obj)
    return doc.strip().splitlines()[0] if doc and doc.strip() else None


def _qualified_name(obj: object) -> str:
    module = getattr(obj, "__module__", None)
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{module}.{name}" if module else name


@dataclasses.dataclass(frozen=True, slots=True)
class PublicationSpec:
    """A declared publication: events of ``type`` sent to ``topic`` with this payload."""

    topic: str
    type: str
    schema: PayloadSchema | None = None
    description: str | None = None

    def __post_init__(self) -> None:
        if not self.topic or not self.type:
            raise ConfigurationError(
                f"a publisher needs a topic and a CloudEvents type, got {self.topic!r} and "
                f"{self.type!r}"
            )
        check_schema(self.schema, f"the publisher of {self.type!r} on {self.topic!r}")


@dataclasses.dataclass(frozen=True, slots=True)
class SubscriptionSpec:
    """A declared subscription: ``group`` handles ``topics`` with ``handler``.

    ``type`` and ``schema`` describe what the handler expects; they do not filter deliveries.
    """

    topics: tuple[str, ...]
    group: str
    handler: Callable[..., Any]
    type: str | None = None
    schema: PayloadSchema | None = None

    def __post_init__(self) -> None:
        check_schema(self.schema, f"the subscription of {self.group!r} to {', '.join(self.topics)}")

    @property
    def handler_name(self) -> str:
        """The handler's module-qualified name."""
        return _qualified_name(self.handler)

    @property
    def summary(self) -> str | None:
        """The first line of the handler's docstring."""
        return _summary(self.handler)


class Declarations:
    """A bus's declared publications and subscriptions, in declaration order, each once."""

    def __init__(self) -> None:
        self._publications: list[PublicationSpec] = []
        self._subscriptions: list[SubscriptionSpec] = []

    @property
    def publications(self) -> tuple[PublicationSpec, ...]:
        """What the bus declares it publishes."""
        return tuple(self._publications)

    @property
    def subscriptions(self) -> tuple[SubscriptionSpec, ...]:
        """What the bus subscribes to, started or registered to start with it."""
        return tuple(self._subscriptions)

    def add(self, spec: PublicationSpec | SubscriptionSpec) -> None:
        """Record ``spec``; a declaration equal to one already recorded is the same one."""
        found: list[Any] = (
            self._publications if isinstance(spec, PublicationSpec) else self._subscriptions
        )
        if spec not in found:
            found.append(spec)


class Publisher:
    """Publishes one declared kind of event; made by :meth:`broker.Bus.publisher`.

    ``await publisher.publish(data, key=...)`` publishes ``data`` as an event of the declared
    type on the declared topic (any keyword option of :meth:`broker.Bus.publish` applies).
    Used as a decorator, it wraps a function that builds the data: calling the wrapped function
    (sync or async) builds, publishes and returns the :class:`~broker.Event` sent.
    """

    def __init__(self, bus: Bus, spec: PublicationSpec) -> None:
        self.bus = bus
        self.spec = spec

    @property
    def topic(self) -> str:
        """The topic events are published to."""
        return self.spec.topic

    @property
    def type(self) -> str:
        """The CloudEvents type of the events."""
        return self.spec.type

    def __repr__(self) -> str:
        return f"Publisher(topic={self.topic!r}, type={self.type!r})"

    async def publish(self, data: Any = None, **options: Any) -> Event:
        """Publish ``data`` (a pydantic model is dumped as JSON); returns the event sent."""
        return await self.bus.publish(
            self.topic, type=self.type, data=self._payload(data), **options
        )

    def _payload(self, data: Any) -> Any:
        """``data`` as JSON-ready values: a model is dumped; a mapping for a model schema is
        validated by that model first."""
        schema = self.spec.schema
        if data is not None and _is_model_class(schema) and not isinstance(data, schema):
            try:
                data = schema.model_validate(data)
            except ValueError as exc:  # pydantic's ValidationError is a ValueError
                raise PayloadError(
                    f"data for {self.type!r} on topic {self.topic!r} does not match "
                    f"{schema.__name__}: {_first_errors(exc)}"
                ) from exc
        dump = getattr(data, "model_dump", None)
        return dump(mode="json", by_alias=True) if callable(dump) else data

    @overload
    def __call__(self, build: Callable[P, Awaitable[Any]]) -> Callable[P, Awaitable[Event]]: ...

    @overload
    def __call__(self, build: Callable[P, Any]) -> Callable[P, Awaitable[Event]]: ...

    def __call__(self, build: Callable[P, Any]) -> Callable[P, Awaitable[Event]]:
        """Wrap ``build``: the wrapped function builds the data, publishes it and returns the
        event sent."""

        @functools.wraps(build)
        async def publishing(*args: P.args, **kwargs: P.kwargs) -> Event:
            data = build(*args, **kwargs)
            if inspect.isawaitable(data):
                data = await data
            return await self.publish(data)

        publishing.publisher = self  # type: ignore[attr-defined]
        return publishing
