"""Saga definitions: the model, and the YAML loader that reports errors by file, line and field.

A definition names the saga type, how to find the correlation id, the start event(s), the steps
(each with an optional deadline relative to the previous step and a compensating event), the
terminal success, failure and compensated events, an overall deadline and the topics to watch::

    topics: [orders, payments]            # watched for every saga (optional)
    sagas:
      - name: order-fulfilment
        correlation: correlationid        # or data.orderId, $.order.id, header:x-order
        topics: [inventory, shipping]     # more topics for this saga (optional)
        start: [order.placed]
        steps:
          - event: payment.authorized
            within: 30s
            compensation: payment.refunded
            service: payment-service      # who owes it (else learned from the events' source)
        complete: [order.shipped]
        fail: [payment.failed]
        compensated: [order.cancelled]
        deadline: 1d
        compensation_within: 5m           # deadline for the compensations after a failure

The same model is plain Python: ``SagaDefinition(name=..., start=[...], steps=[Step(...)])``.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from broker.envelope import Event
from saga_monitor.errors import DefinitionError

__all__ = [
    "Correlation",
    "Definitions",
    "SagaDefinition",
    "Step",
    "format_duration",
    "load_definitions",
    "parse_definitions",
    "parse_duration",
]

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_EXTENSION_NAME = re.compile(r"[a-z0-9]{1,40}\Z")
_SIMPLE_PATH = re.compile(r"[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)*\Z")


def parse_duration(value: str | float | None, *, field: str = "duration") -> float | None:
    """Seconds from ``30s``, ``100ms``, ``5m``, ``2h``, ``1d``, ``1h30m`` or a number of seconds."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise DefinitionError(f"{field}: {value!r} is not a duration; use e.g. 30s, 5m, 2h or 1d")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip().replace(" ", "")
        parts = _DURATION_PART.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            if re.fullmatch(r"\d+(\.\d+)?", text):
                return _positive(float(text), field)
            raise DefinitionError(
                f"{field}: {value!r} is not a duration; use e.g. 30s, 5m, 2h or 1d"
            )
        seconds = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)
    return _positive(seconds, field)


def _positive(seconds: float, field: str) -> float:
    if seconds <= 0:
        raise DefinitionError(f"{field}: a duration must be positive, got {seconds:g}s")
    return seconds


def format_duration(seconds: float) -> str:
    """A short human form of a duration: ``250ms``, ``30s``, ``5m``, ``2h``, ``1d``, ``1h30m``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    out = []
    rest = round(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            out.append(f"{count}{unit}")
    return "".join(out[:2])


@dataclasses.dataclass(frozen=True, slots=True)
class Correlation:
    """Where an event carries its correlation id: an extension (header) or a path into data."""

    kind: Literal["extension", "data"] = "extension"
    path: str = "correlationid"
    spelling: str = "correlationid"
    _compiled: Any = dataclasses.field(default=None, compare=False, repr=False)

    @classmethod
    def parse(cls, text: str) -> Correlation:
        """``correlationid`` (default), ``header:<name>``, ``data.<path>`` or ``$.<jsonpath>``."""
        text = text.strip()
        if text.startswith("header:"):
            name = text.removeprefix("header:").strip().lower()
            if not name:
                raise DefinitionError("correlation: header: needs a name, e.g. header:orderid")
            return cls("extension", name, text)
        if text == "data" or text.startswith(("data.", "data[", "$")):
            expression = "$" + text[4:] if text.startswith("data") else text
            return cls("data", expression, text, _compile_path(expression))
        if _EXTENSION_NAME.match(text):
            return cls("extension", text, text)
        raise DefinitionError(
            f"correlation: {text!r} is not understood; use correlationid, header:<name>, "
            "data.<path> (e.g. data.orderId) or a JSONPath such as $.order.id"
        )

    def extract(self, event: Event) -> str | None:
        """The correlation id of ``event``, or None when it has none."""
        if self.kind == "extension":
            value: Any = event.extensions.get(self.path)
            if value.__class__ is str:  # the common case, as below
                return value or None
            if value is None and not _EXTENSION_NAME.match(self.path):
                value = event.extensions.get(re.sub(r"[^a-z0-9]", "", self.path))
        else:
            value = self._from_data(event.data)
        if value is None or isinstance(value, dict | list) or value == "":
            return None
        return str(value).lower() if isinstance(value, bool) else str(value)

    def _from_data(self, data: Any) -> Any:
        if isinstance(self._compiled, tuple):
            for key in self._compiled:
                if not isinstance(data, Mapping):
                    return None
                data = data.get(key)
            return data
        matches = self._compiled.find(data)
        return matches[0].value if matches else None

    def __str__(self) -> str:
        return self.spelling


def _compile_path(expression: str) -> Any:
    """A tuple of keys for a simple dotted path, else a compiled jsonpath-ng expression."""
    body = expression[2:] if expression.startswith("$.") else ""
    if expression == "$":
        return ()
    if body and _SIMPLE_PATH.match(body):
        return tuple(body.split("."))
    try:
        from jsonpath_ng import parse as jsonpath_parse  # type: ignore[attr-defined]

        return jsonpath_parse(expression)
    except Exception as exc:  # jsonpath-ng raises bare Exception subclasses on syntax errors
        message = f"correlation: {expression!r} is not a valid JSONPath: {exc}"
        raise DefinitionError(message) from exc


@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    """One step: the event that marks it done, its deadline, its compensating event and the
    service that owes it (``service``: when None, learned from the ``source`` of its events)."""

    event: str
    within: float | None = None
    compensation: str | None = None
    service: str | None = None

    def __post_init__(self) -> None:
        if not self.event or not isinstance(self.event, str):
            raise _field_error("event", "a step needs a non-empty event type")
        within = parse_duration(self.within, field="within")
        object.__setattr__(self, "within", within)
        if self.service is not None and (not isinstance(self.service, str) or not self.service):
            raise _field_error("service", "a step's service must be a non-empty name")


def _field_error(field: str, message: str) -> DefinitionError:
    error = DefinitionError(f"{field}: {message}")
    error.field = field  # type: ignore[attr-defined]
    return error


def _types(values: str | Iterable[str] | None) -> tuple[str, ...]:
    if values is None:
        return ()
    if isinstance(values, str):
        return (values,)
    return tuple(values)


@dataclasses.dataclass(frozen=True, slots=True)
class SagaDefinition:
    """One saga type. Lists may be given as any iterable (or a single string)."""

    name: str
    start: tuple[str, ...]
    steps: tuple[Step, ...] = ()
    complete: tuple[str, ...] = ()
    fail: tuple[str, ...] = ()
    compensated: tuple[str, ...] = ()
    correlation: Correlation = dataclasses.field(default_factory=Correlation)
    deadline: float | None = None
    compensation_within: float | None = None
    topics: tuple[str, ...] = ()
    #: How long a completed saga waits for skipped steps that may still arrive over other
    #: topics (brokers do not order across topics) before reporting them out of order.
    grace: float | None = 10.0

    def __post_init__(self) -> None:
        setattr_ = object.__setattr__
        if not self.name or not isinstance(self.name, str):
            raise _field_error("name", "a saga needs a non-empty name")
        for name in ("start", "complete", "fail", "compensated", "topics"):
            setattr_(self, name, _types(getattr(self, name)))
        setattr_(self, "steps", tuple(self.steps))
        correlation: Any = self.correlation
        if isinstance(correlation, str):
            setattr_(self, "correlation", Correlation.parse(correlation))
        setattr_(self, "deadline", parse_duration(self.deadline, field="deadline"))
        within = parse_duration(self.compensation_within, field="compensation_within")
        setattr_(self, "compensation_within", within)
        setattr_(self, "grace", parse_duration(self.grace, field="grace"))
        if not self.start:
            raise _field_error("start", f"saga {self.name!r} needs at least one start event")
        if not self.complete:
            if not self.steps:
                raise _field_error("complete", f"saga {self.name!r} needs a complete event")
            setattr_(self, "complete", (self.steps[-1].event,))
        self._check_roles()

    def _check_roles(self) -> None:
        steps = [s.event for s in self.steps]
        comps = [s.compensation for s in self.steps if s.compensation]
        for field, values in (("steps", steps), ("compensation", comps)):
            repeated = sorted({v for v in values if values.count(v) > 1})
            if repeated:
                raise _field_error(field, f"{', '.join(repeated)} appears more than once")
        roles = {
            "start": set(self.start),
            "steps": set(steps),
            "compensation": set(comps),
            "fail": set(self.fail),
            "compensated": set(self.compensated),
        }
        names = list(roles)
        for i, first in enumerate(names):
            for second in names[i + 1 :]:
                both = roles[first] & roles[second]
                if both:
                    raise _field_error(
                        second, f"{', '.join(sorted(both))} is both a {first} and a {second} event"
                    )
        clash = set(self.complete) & (roles["start"] | roles["fail"] | roles["compensation"])
        if clash:
            raise _field_error(
                "complete",
                f"{', '.join(sorted(clash))} cannot also be a start, fail or compensation event",
            )

    def services(self) -> dict[str, str]:
        """Event type -> owning service, as the steps name them (a step's compensation is
        owed by the step's service)."""
        owners: dict[str, str] = {}
        for step in self.steps:
            if step.service:
                owners[step.event] = step.service
                if step.compensation:
                    owners[step.compensation] = step.service
        return owners

    def event_types(self) -> frozenset[str]:
        """Every event type this saga reacts to."""
        comps = (s.compensation for s in self.steps if s.compensation)
        return frozenset(
            (
                *self.start,
                *(s.event for s in self.steps),
                *comps,
                *self.complete,
                *self.fail,
                *self.compensated,
            )
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Definitions:
    """A set of saga definitions plus the topics the monitor subscribes to."""

    sagas: tuple[SagaDefinition, ...]
    topics: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "sagas", tuple(self.sagas))
        object.__setattr__(self, "topics", _types(self.topics))
        names = [s.name for s in self.sagas]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise DefinitionError(f"sagas: the name {', '.join(repeated)} is used more than once")

    @property
    def all_topics(self) -> tuple[str, ...]:
        """Top-level topics plus every saga's own, in first-seen order."""
        seen = dict.fromkeys(self.topics)
        for saga in self.sagas:
            seen.update(dict.fromkeys(saga.topics))
        return tuple(seen)

    def get(self, name: str) -> SagaDefinition:
        """The saga called ``name``; raises DefinitionError (with a suggestion) otherwise."""
        for saga in self.sagas:
            if saga.name == name:
                return saga
        guess = difflib.get_close_matches(name, [s.name for s in self.sagas], n=1)
        hint = f"; did you mean {guess[0]!r}?" if guess else ""
        raise DefinitionError(f"no saga named {name!r}{hint}")


# -- YAML ---------------------------------------------------------------------------------------


class _Node:
    """A YAML node with its path, for error messages that name file, line and field."""

    def __init__(self, node: yaml.Node, path: str, file: str) -> None:
        self.node = node
        self.path = path
        self.file = file

    @property
    def line(self) -> int:
        return self.node.start_mark.line + 1

    def error(self, message: str) -> DefinitionError:
        where = f"{self.path}: " if self.path else ""
        return DefinitionError(f"{self.file}:{self.line}: {where}{message}")

    def child(self, node: yaml.Node, name: str) -> _Node:
        joined = name.startswith("[") or not self.path
        path = f"{self.path}{name}" if joined else f"{self.path}.{name}"
        return _Node(node, path, self.file)

    def mapping(self, allowed: Sequence[str], required: Sequence[str] = ()) -> dict[str, _Node]:
        if not isinstance(self.node, yaml.MappingNode):
            raise self.error(f"expected a mapping with keys {', '.join(allowed)}")
        out: dict[str, _Node] = {}
        for key, value in self.node.value:
            name = str(key.value)
            if name not in allowed:
                guess = difflib.get_close_matches(name, allowed, n=1)
                hint = f"; did you mean {guess[0]!r}?" if guess else ""
                raise _Node(key, self.path, self.file).error(f"unknown field {name!r}{hint}")
            out[name] = self.child(value, name)
        for name in required:
            if name not in out:
                raise self.error(f"missing required field {name!r}")
        return out

    def sequence(self) -> list[_Node]:
        if not isinstance(self.node, yaml.SequenceNode):
            raise self.error("expected a list")
        return [self.child(item, f"[{i}]") for i, item in enumerate(self.node.value)]

    def string(self) -> str:
        if not isinstance(self.node, yaml.ScalarNode) or not str(self.node.value).strip():
            raise self.error("expected a non-empty string")
        return str(self.node.value).strip()

    def strings(self) -> tuple[str, ...]:
        if isinstance(self.node, yaml.ScalarNode):
            return (self.string(),)
        return tuple(item.string() for item in self.sequence())

    def duration(self) -> float | None:
        text = self.string()
        try:
            return parse_duration(text, field="duration")
        except DefinitionError as exc:
            raise self.error(str(exc).removeprefix("duration: ")) from None


_SAGA_FIELDS = (
    "name",
    "correlation",
    "topics",
    "start",
    "steps",
    "complete",
    "fail",
    "compensated",
    "deadline",
    "compensation_within",
    "grace",
)


def parse_definitions(text: str, *, file: str = "<definitions>") -> Definitions:
    """Parse a definitions document; errors name ``file``, the line and the field."""
    try:
        root_node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"{mark.line + 1}" if mark is not None else "?"
        problem = getattr(exc, "problem", None) or str(exc)
        raise DefinitionError(f"{file}:{line}: not valid YAML: {problem}") from None
    if root_node is None:
        raise DefinitionError(f"{file}: the file is empty; it needs a 'sagas:' list")
    root = _Node(root_node, "", file).mapping(("sagas", "topics"), required=("sagas",))
    topics = root["topics"].strings() if "topics" in root else ()
    sagas = [_saga(node) for node in root["sagas"].sequence()]
    if not sagas:
        raise root["sagas"].error("needs at least one saga")
    try:
        return Definitions(tuple(sagas), topics)
    except DefinitionError as exc:
        raise root["sagas"].error(str(exc).removeprefix("sagas: ")) from None


def _saga(node: _Node) -> SagaDefinition:
    fields = node.mapping(_SAGA_FIELDS, required=("name", "start"))
    values: dict[str, Any] = {"name": fields["name"].string()}
    for name in ("start", "complete", "fail", "compensated", "topics"):
        if name in fields:
            values[name] = fields[name].strings()
    for name in ("deadline", "compensation_within", "grace"):
        if name in fields:
            values[name] = fields[name].duration()
    if "correlation" in fields:
        try:
            values["correlation"] = Correlation.parse(fields["correlation"].string())
        except DefinitionError as exc:
            raise fields["correlation"].error(str(exc).removeprefix("correlation: ")) from None
    if "steps" in fields:
        values["steps"] = tuple(_step(item) for item in fields["steps"].sequence())
    try:
        return SagaDefinition(**values)
    except DefinitionError as exc:
        field = getattr(exc, "field", None)
        target = fields.get(field, node) if field else node
        message = str(exc).removeprefix(f"{field}: ") if field else str(exc)
        raise target.error(message) from None


def _step(node: _Node) -> Step:
    if isinstance(node.node, yaml.ScalarNode):
        return Step(node.string())
    fields = node.mapping(("event", "within", "compensation", "service"), required=("event",))
    within = fields["within"].duration() if "within" in fields else None
    compensation = fields["compensation"].string() if "compensation" in fields else None
    service = fields["service"].string() if "service" in fields else None
    return Step(fields["event"].string(), within, compensation, service)


def load_definitions(path: str | Path) -> Definitions:
    """Read a definitions YAML file; errors name the file, line and field."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise DefinitionError(
            f"cannot read saga definitions {str(source)!r}: {exc.strerror or exc}"
        ) from exc
    return parse_definitions(text, file=str(source))
