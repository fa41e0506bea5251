"""Live servers for the test suite and the benchmarks (development only: not in the wheel).

One place knows how to get each backend, so ``tests/`` and ``bench/`` get the same servers:

* :mod:`devservers.kafka`: a spawned Tansu broker, or ``CHOREO_TEST_KAFKA_URL``;
* :mod:`devservers.nats`: a spawned nats-server with JetStream, or ``CHOREO_TEST_NATS_URL``;
* :mod:`devservers.rabbitmq`: the local RabbitMQ in a private vhost, or ``CHOREO_TEST_AMQP_URL``,
  and private nodes to crash;
* :mod:`devservers.databases`: PostgreSQL and MariaDB/MySQL (``CHOREO_TEST_POSTGRES_URL``,
  ``CHOREO_TEST_MYSQL_URL``), checked for what change data capture needs.

Every helper waits for a real protocol handshake and raises :class:`ServerUnavailableError`
with one line saying what to run; ``tests/servers/`` wraps them in pytest fixtures.
"""

from devservers.common import ServerUnavailableError, free_port, require_all

__all__ = ["ServerUnavailableError", "free_port", "require_all"]
