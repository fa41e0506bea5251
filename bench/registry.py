"""Registry serialization against plain fastavro and plain json+jsonschema, in one run, and the
served registry's `GET /schemas/ids/{id}` rate (from several client processes).

1. Both sides encode (with validation) and decode the same small order records; ours adds the
   Confluent wire header and the schema cache lookup, so the ratio is what the registry costs.
2. The wire codec alone (schema cached) against raw fastavro ``schemaless_writer`` /
   ``schemaless_reader`` on the same records; the target is >= 0.8x.
3. ``GET /schemas/ids/{id}`` requests per second against ``choreo registry serve`` running in its
   own process, from several client processes; the target is >= 2,000 requests/s.

    python -m bench.registry            # writes bench/results/registry.json
"""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import fastavro
import httpx
import jsonschema

from schemas import Deserializer, RegistryClient, Schema, SchemaType, Serializer
from schemas.compatibility import Resolved
from schemas.serde import AvroWireCodec, unpack

__all__ = ["bench_avro", "bench_registry", "main"]

RESULTS = Path(__file__).parent / "results"
COUNT = 50_000
AVRO = {
    "type": "record",
    "name": "Order",
    "namespace": "bench",
    "fields": [
        {"name": "orderId", "type": "string"},
        {"name": "amount", "type": "double"},
        {"name": "items", "type": "int"},
        {"name": "customer", "type": "string"},
    ],
}
JSON_SCHEMA = {
    "type": "object",
    "properties": {
        "orderId": {"type": "string"},
        "amount": {"type": "number"},
        "items": {"type": "integer"},
        "customer": {"type": "string"},
    },
    "required": ["orderId", "amount", "items", "customer"],
}
RECORD = {"orderId": "order-0001", "amount": 42.5, "items": 3, "customer": "customer-7"}


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
            *(sys.executable, "-m", "choreo", "registry", "serve"),
            *("--port", str(port), "--storage", storage),
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


def _raw_avro() -> float:
    parsed = fastavro.parse_schema(AVRO)
    started = time.perf_counter()
    for _ in range(COUNT):
        fastavro.validation.validate(RECORD, parsed, raise_errors=True)
        out = io.BytesIO()
        fastavro.schemaless_writer(out, parsed, RECORD)
        fastavro.schemaless_reader(io.BytesIO(out.getvalue()), parsed)
    return COUNT / (time.perf_counter() - started)


def _raw_json() -> float:
    validator = jsonschema.Draft7Validator(JSON_SCHEMA)
    started = time.perf_counter()
    for _ in range(COUNT):
        validator.validate(RECORD)
        json.loads(json.dumps(RECORD).encode())
    return COUNT / (time.perf_counter() - started)


async def _ours(schema: Schema, registry_url: str) -> float:
    client = RegistryClient.from_url(registry_url)
    try:
        serializer = Serializer(client, schema)
        deserializer = Deserializer(client)
        await deserializer.deserialize(await serializer.serialize("bench", RECORD))  # warm caches
        started = time.perf_counter()
        for _ in range(COUNT):
            await deserializer.deserialize(await serializer.serialize("bench", RECORD))
        return COUNT / (time.perf_counter() - started)
    finally:
        await client.close()


def _median(fn: Any, *args: Any) -> float:
    return statistics.median(fn(*args) for _ in range(3))


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        avro = Schema(json.dumps(AVRO), SchemaType.AVRO)
        json_schema = Schema(json.dumps(JSON_SCHEMA), SchemaType.JSON)
        raw_avro = _median(_raw_avro)
        ours_avro = _median(lambda: asyncio.run(_ours(avro, f"sqlite:///{tmp}/a.db")))
        raw_json = _median(_raw_json)
        ours_json = _median(lambda: asyncio.run(_ours(json_schema, f"sqlite:///{tmp}/j.db")))
    for kind, ours, raw, base in (
        ("avro", ours_avro, raw_avro, "fastavro"),
        ("json", ours_json, raw_json, "json + jsonschema"),
    ):
        rows.append(
            {
                "suite": "registry",
                "backend": kind,
                "metric": f"validate+encode+decode/s vs {base}",
                "choreograph": round(ours, 1),
                "baseline": round(raw, 1),
            }
        )
    codec = bench_avro()  # the wire codec alone (schema cached) vs raw fastavro, same records
    rows.append(
        {
            "suite": "registry",
            "backend": "avro",
            "metric": "encode+decode/s, wire codec vs fastavro",
            "choreograph": round(20_000 / codec["ours_s"], 1),
            "baseline": round(20_000 / codec["raw_fastavro_s"], 1),
        }
    )
    served = bench_registry()
    rows.append(
        {
            "suite": "registry",
            "backend": "http",
            "metric": "GET /schemas/ids/{id} requests/s",
            "value": round(served["requests_per_s"], 1),
        }
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "registry.json").write_text(json.dumps(rows, indent=2))
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
