"""The passive saga monitor: watches the events services already publish, correlates them into
saga instances and tells you which business transactions are stuck, compensating or done.

    from broker import Bus
    from saga_monitor import SagaMonitor, load_definitions, open_saga_store

    definitions = load_definitions("sagas.yaml")
    async with Bus("sqlite:///.choreo/broker.db") as bus:
        monitor = SagaMonitor(definitions, bus, open_saga_store("sqlite:///.choreo/sagas.db"))
        await monitor.run()
"""

from saga_monitor.correlator import Correlator, Received
from saga_monitor.definitions import (
    Correlation,
    Definitions,
    SagaDefinition,
    Step,
    load_definitions,
    parse_definitions,
)
from saga_monitor.errors import (
    DefinitionError,
    InstanceNotFoundError,
    SagaConfigError,
    SagaError,
    SagaStoreError,
)
from saga_monitor.machine import Outcome, SagaMachine
from saga_monitor.model import STATES, Alert, Anomaly, Entry, Instance, Observation
from saga_monitor.monitor import SagaMonitor
from saga_monitor.store import (
    DEFAULT_STORE_URL,
    MemoryStore,
    MonitorStatus,
    SagaStore,
    open_saga_store,
)
from saga_monitor.store_sql import SqlSagaStore
from saga_monitor.watermark import SourceClocks, Watermark

__all__ = [
    "DEFAULT_STORE_URL",
    "STATES",
    "Alert",
    "Anomaly",
    "Correlation",
    "Correlator",
    "DefinitionError",
    "Definitions",
    "Entry",
    "Instance",
    "InstanceNotFoundError",
    "MemoryStore",
    "MonitorStatus",
    "Observation",
    "Outcome",
    "Received",
    "SagaConfigError",
    "SagaDefinition",
    "SagaError",
    "SagaMachine",
    "SagaMonitor",
    "SagaStore",
    "SagaStoreError",
    "SourceClocks",
    "SqlSagaStore",
    "Step",
    "Watermark",
    "load_definitions",
    "open_saga_store",
    "parse_definitions",
]
