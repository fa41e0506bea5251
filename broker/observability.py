"""Logging and metrics, defined once for every adapter and policy.

Logs go through structlog, bound with ``topic``, ``group``, ``event_id`` and
``correlation_id``: a console renderer on a TTY, JSON lines otherwise. Metrics are Prometheus
collectors in the default registry (``choreo_*``), served by :func:`serve_metrics`.

The per-event counters are :class:`Tally` families: a labelled child is a plain number that
the event loop adds to (no lock, no validation per event), read when Prometheus scrapes. They
are exact within a process as long as one thread counts a child (an event loop does). Latency
histograms are :class:`Timings` families built the same way (a sum and a count per bucket);
they observe one publish or handler call in eight.
"""

from __future__ import annotations

import bisect
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import structlog
from prometheus_client import REGISTRY, Gauge, start_http_server
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

__all__ = [
    "BREAKER_OPEN",
    "CONSUMED",
    "DEAD_LETTERED",
    "DUPLICATES",
    "EXPIRED",
    "HANDLER_SECONDS",
    "LATENCY_SAMPLE_MASK",
    "PUBLISHED",
    "PUBLISH_SECONDS",
    "RETRIES",
    "Tally",
    "Timings",
    "configure_logging",
    "get_logger",
    "serve_metrics",
]

#: Latency histograms observe one publish / handler call in eight (counters are exact).
LATENCY_SAMPLE_MASK = 7
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Count:
    """One labelled child of a :class:`Tally`: ``inc`` adds to a number."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (1 by default)."""
        self.value += amount


class Tally(Collector):
    """A Prometheus counter family (``<name>_total``) whose children cost an addition per
    event; registered in the default registry and read at scrape time."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], Count] = {}
        REGISTRY.register(self)

    def labels(self, *values: str) -> Count:
        """The child for these label values (bind it once, then ``inc`` it per event)."""
        key = tuple(str(v) for v in values)
        if len(key) != len(self.labelnames):
            raise ValueError(f"{self.name} takes the labels {', '.join(self.labelnames)}")
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = Count()
        return child

    def value(self, *values: str) -> float:
        """The current count for these label values (0 when never counted)."""
        child = self._children.get(tuple(values))
        return 0.0 if child is None else child.value

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, child in list(self._children.items()):
            family.add_metric(key, child.value)
        yield family

    def describe(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)


class Timing:
    """One labelled child of a :class:`Timings`: ``observe`` adds a sample to its bucket."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        """Add one sample of ``seconds``."""
        self.sum += seconds
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1


class Timings(Collector):
    """A Prometheus histogram family (``<name>_bucket``, ``_count``, ``_sum``) whose children
    cost a bisection and two additions per sample; registered in the default registry and
    read at scrape time. Without label names, :meth:`observe` adds to its only child."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = _LATENCY_BUCKETS,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.bounds = tuple(sorted(float(b) for b in buckets))
        self._children: dict[tuple[str, ...], Timing] = {}
        self._only = None if self.labelnames else self.labels()
        REGISTRY.register(self)

    def labels(self, *values: str) -> Timing:
        """The child for these label values (bind it once, then ``observe`` per sample)."""
        key = tuple(str(v) for v in values)
        if len(key) != len(self.labelnames):
            raise ValueError(f"{self.name} takes the labels {', '.join(self.labelnames)}")
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = Timing(self.bounds)
        return child

    def observe(self, seconds: float) -> None:
        """Add a sample to a family without labels."""
        if self._only is None:
            raise ValueError(f"{self.name} takes the labels {', '.join(self.labelnames)}")
        self._only.observe(seconds)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, child in list(self._children.items()):
            counts, running, buckets = list(child.counts), 0, []
            for bound, count in zip((*self.bounds, float("inf")), counts, strict=True):
                running += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
            family.add_metric(list(key), buckets, child.sum)
        yield family

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)


PUBLISHED = Tally("choreo_published", "Events durably published", ["topic"])
PUBLISH_SECONDS = Timings(
    "choreo_publish_seconds",
    "Time until the broker accepted an event (one publish in eight sampled)",
)
CONSUMED = Tally(
    "choreo_consumed", "Deliveries finished, by outcome", ["topic", "group", "outcome"]
)
HANDLER_SECONDS = Timings(
    "choreo_handler_seconds",
    "Handler run time per attempt (one call in eight sampled)",
    ["group"],
)
RETRIES = Tally("choreo_retries", "Handler attempts that failed and were retried", ["group"])
DEAD_LETTERED = Tally(
    "choreo_dead_lettered", "Events sent to a dead-letter topic", ["topic", "group", "reason"]
)
EXPIRED = Tally("choreo_expired", "Events whose TTL passed before handling", ["topic", "group"])
DUPLICATES = Tally("choreo_duplicates", "Deliveries skipped by the inbox", ["group"])
BREAKER_OPEN = Gauge("choreo_breaker_open", "1 while a group's circuit breaker is open", ["group"])

_configured = False


def configure_logging(level: str | int | None = None) -> None:
    """Set up structlog: console on a TTY, JSON lines otherwise. Level from CHOREO_LOG_LEVEL."""
    global _configured
    level = level or os.environ.get("CHOREO_LOG_LEVEL", "WARNING")
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        numeric = logging.WARNING
    renderer: Any = (
        structlog.dev.ConsoleRenderer()
        if sys.stderr.isatty()
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    _configured = True


def get_logger(name: str, **bound: Any) -> Any:
    """A structlog logger for ``name`` bound with ``bound`` fields."""
    if not _configured:
        configure_logging()
    return structlog.get_logger(name).bind(**bound)


def serve_metrics(port: int, host: str = "127.0.0.1") -> None:
    """Expose the Prometheus metrics on ``http://host:port/metrics`` (a daemon thread)."""
    start_http_server(port, addr=host)
