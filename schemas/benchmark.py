"""Benchmarks (not tests): ``python -m schemas.benchmark``.

1. Avro encode + decode through our wire codec (schema cached) against raw fastavro
   ``schemaless_writer``/``schemaless_reader`` on the same records; the target is >= 0.8x.
2. ``GET /schemas/ids/{id}`` requests per second against ``choreo registry serve`` running in
   its own process, from several client processes; the target is >= 2,000 requests/s.
"""

from __future__ import annotations

import http.client
import io
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import fastavro
import httpx

from schemas.compatibility import Resolved
from schemas.model import Schema
from schemas.serde import AvroWireCodec, unpack

__all__ = ["bench_avro", "bench_registry", "main"]

ORDER = {
    "type": "record",
    "name": "Order",
    "namespace": "bench",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "customer", "type": "string"},
        {"name": "amount", "type": "double"},
        {"name": "items", "type": {"type": "array", "items": "string"}},
        {"name": "note", "type": ["null", "string"], "default": None},
    ],
}


def _records(count: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"o-{i}",
            "customer": f"c-{i % 97}",
            "amount": i * 1.5,
            "items": ["a", "b", "c"][: i % 3 + 1],
            "note": None if i % 2 else "gift",
        }
        for i in range(count)
    ]


def bench_avro(count: int = 20_000, rounds: int = 5) -> dict[str, float]:
    """Seconds per record for raw fastavro and for our codec, best of ``rounds``."""
    records = _records(count)
    parsed = fastavro.parse_schema(ORDER)
    codec = AvroWireCodec(1, Resolved(Schema(json.dumps(ORDER))))

    def raw() -> None:
        for record in records:
            out = io.BytesIO()
            fastavro.schemaless_writer(out, parsed, record)
            fastavro.schemaless_reader(io.BytesIO(out.getvalue()), parsed, None)

    def ours() -> None:
        for record in records:
            codec.decode(unpack(codec.encode(record))[1])

    raw_times: list[float] = []
    our_times: list[float] = []
    for _ in range(rounds):  # interleaved, so that load from elsewhere hits both alike
        for func, times in ((raw, raw_times), (ours, our_times)):
            started = time.perf_counter()
            func()
            times.append(time.perf_counter() - started)

    raw_s, ours_s = min(raw_times), min(our_times)
    return {"raw_fastavro_s": raw_s, "ours_s": ours_s, "ratio": raw_s / ours_s}


def _client_worker(port: int, count: int, out: Any) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    for _ in range(count):
        conn.request("GET", "/schemas/ids/1")
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"GET /schemas/ids/1 answered {response.status}")
    conn.close()
    out.put(count)


def bench_registry(
    requests: int = 12_000, processes: int = 4, port: int = 18081
) -> dict[str, float]:
    """Requests per second for ``GET /schemas/ids/1`` against a served registry."""
    with tempfile.TemporaryDirectory() as tmp:
        storage = f"sqlite:///{Path(tmp) / 'bench.db'}"
        command = [
            sys.executable,
            "-c",
            "from schemas.cli import registry_app; registry_app()",
            "serve",
            "--port",
            str(port),
            "--storage",
            storage,
        ]
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, env=os.environ.copy())
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_until_up(url)
            httpx.post(f"{url}/subjects/bench-value/versions", json={"schema": json.dumps(ORDER)})
            httpx.get(f"{url}/schemas/ids/1").raise_for_status()
            queue: Any = multiprocessing.Queue()
            share = requests // processes
            workers = [
                multiprocessing.Process(target=_client_worker, args=(port, share, queue))
                for _ in range(processes)
            ]
            started = time.perf_counter()
            for worker in workers:
                worker.start()
            done = sum(queue.get(timeout=300) for _ in workers)
            elapsed = time.perf_counter() - started
            for worker in workers:
                worker.join()
        finally:
            server.terminate()
            server.wait(timeout=10)
    return {"requests": done, "seconds": elapsed, "requests_per_s": done / elapsed}


def _wait_until_up(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"registry at {url} did not start")


def main() -> None:
    """Print both benchmarks as JSON."""
    print(json.dumps({"avro": bench_avro(), "registry": bench_registry()}, indent=2))


if __name__ == "__main__":
    main()
