"""The core packages import without any broker client library (STYLE.md: only adapters import
their client, lazily)."""

from __future__ import annotations

import subprocess
import sys

BLOCKED = ("aiokafka", "aio_pika", "aiormq", "nats", "psycopg2", "pymysqlreplication")


def test_core_imports_with_client_libraries_blocked() -> None:
    """broker, schemas, connectors and saga_monitor import with every client library blocked."""
    code = (
        "import sys\n"
        f"for name in {BLOCKED!r}: sys.modules[name] = None\n"
        "import broker, broker.bus, broker.adapters.memory, broker.adapters.sqlite\n"
        "import importlib.util\n"
        "for pkg in ('schemas', 'saga_monitor', 'connectors'):\n"
        "    if importlib.util.find_spec(pkg) is not None:\n"
        "        importlib.import_module(pkg)\n"
        "import importlib\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", "import importlib\n" + code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "ok" == result.stdout.strip(), result.stderr
