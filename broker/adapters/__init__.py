"""Backends, one package each (``memory``, ``sqlite``, ``kafka``, ``rabbitmq``, ``nats``), all
laid out alike - ``adapter.py``, ``consumer.py``, ``wire.py``, ``settings.py`` - and built from
the shared :mod:`broker.adapters.kit`. Each package is the only importer of its broker's client
library, and is imported only when its URL scheme is used (:mod:`broker.urls`).
See ``docs/adapters.md`` for adding one.
"""

__all__: list[str] = []
