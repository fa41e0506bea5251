"""Logging and metrics, defined once for every adapter and policy.

Logs go through structlog, bound with ``topic``, ``group``, ``event_id`` and
``correlation_id``: a console renderer on a TTY, JSON lines otherwise. Metrics are Prometheus
collectors in the default registry (``choreo_*``), served by :func:`serve_metrics`.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog
from prometheus_client import Counter, Gauge, Histogram, start_http_server

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
    "configure_logging",
    "get_logger",
    "serve_metrics",
]

#: Latency histograms observe one publish / handler call in eight (counters are exact).
LATENCY_SAMPLE_MASK = 7
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

PUBLISHED = Counter("choreo_published", "Events durably published", ["topic"])
PUBLISH_SECONDS = Histogram(
    "choreo_publish_seconds",
    "Time until the broker accepted an event (one publish in eight sampled)",
    buckets=_LATENCY_BUCKETS,
)
CONSUMED = Counter(
    "choreo_consumed", "Deliveries finished, by outcome", ["topic", "group", "outcome"]
)
HANDLER_SECONDS = Histogram(
    "choreo_handler_seconds",
    "Handler run time per attempt (one call in eight sampled)",
    ["group"],
    buckets=_LATENCY_BUCKETS,
)
RETRIES = Counter("choreo_retries", "Handler attempts that failed and were retried", ["group"])
DEAD_LETTERED = Counter(
    "choreo_dead_lettered", "Events sent to a dead-letter topic", ["topic", "group", "reason"]
)
EXPIRED = Counter("choreo_expired", "Events whose TTL passed before handling", ["topic", "group"])
DUPLICATES = Counter("choreo_duplicates", "Deliveries skipped by the inbox", ["group"])
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
