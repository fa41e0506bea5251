"""Test helpers for services built on choreograph: no patching, no sleeping.

* :class:`ChoreoKit` - real buses on a private ``memory://`` broker, every published event
  kept for assertions (``kit.assert_published("orders", type="order.placed")``);
* :class:`VirtualClock` - the time those buses follow: retries and backoff, TTL expiry, the
  circuit breaker's cool-down, delayed delivery and the saga monitor's deadlines all move
  with ``await clock.advance(timedelta(hours=2))``, in milliseconds, the same way every run;
* a pytest plugin (installed with choreograph, module ``pytest_choreograph``) with the
  fixtures ``virtual_clock`` and ``choreo_kit``; :func:`saga_monitor.testing.start_monitor`
  adds a saga monitor to a kit.

docs/testing.md walks through a test of three services.
"""

from broker.testing.clock import VirtualClock
from broker.testing.kit import ChoreoKit
from broker.testing.matching import Match

__all__ = ["ChoreoKit", "Match", "VirtualClock"]
