"""Registry serialization against plain fastavro and plain json+jsonschema, in one run, and the
served registry's `GET /schemas/ids/{id}` rate (from several client processes).

Both sides encode (with validation) and decode the same 200,000 small order records; ours adds
the Confluent wire header and the schema cache lookup, so the ratio is what the registry costs.

    python -m bench.registry            # writes bench/results/registry.json
"""

from __future__ import annotations

import asyncio
import io
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import fastavro
import jsonschema

from schemas import Deserializer, RegistryClient, Schema, SchemaType, Serializer
from schemas.benchmark import bench_avro, bench_registry

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
