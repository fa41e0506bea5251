"""The compiled Avro checker closes the holes fastavro's writer leaves open."""

from __future__ import annotations

import json
from typing import Any

import pytest

from schemas.compatibility import Resolved
from schemas.errors import SchemaValidationError
from schemas.model import Schema
from schemas.serde import AvroWireCodec, unpack

SCHEMA = {
    "type": "record",
    "name": "Reading",
    "namespace": "lab",
    "fields": [
        {"name": "count", "type": "int"},
        {"name": "total", "type": "long"},
        {"name": "value", "type": "double"},
        {"name": "ok", "type": "boolean"},
        {"name": "tag", "type": ["null", "string", "int"], "default": None},
        {"name": "samples", "type": {"type": "array", "items": "float"}, "default": []},
        {"name": "labels", "type": {"type": "map", "values": "long"}, "default": {}},
        {
            "name": "next",
            "type": ["null", "Reading"],
            "default": None,
        },
    ],
}
GOOD = {"count": 1, "total": 2**40, "value": 1.5, "ok": True}


@pytest.fixture
def codec() -> AvroWireCodec:
    return AvroWireCodec(9, Resolved(Schema(json.dumps(SCHEMA))))


def test_valid_data_round_trips(codec: AvroWireCodec) -> None:
    """Valid data, nested and recursive, encodes and decodes unchanged (defaults filled)."""
    value = {**GOOD, "tag": 3, "samples": [0.5], "labels": {"a": 1}, "next": dict(GOOD)}
    decoded = codec.decode(unpack(codec.encode(value))[1])
    assert (value["next"]["count"], [0.5], {"a": 1}, 3) == (
        decoded["next"]["count"],
        decoded["samples"],
        decoded["labels"],
        decoded["tag"],
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"count": True}, "lab.Reading.count"),
        ({"count": 1.5}, "lab.Reading.count"),
        ({"count": 2**31}, "lab.Reading.count"),
        ({"total": 2**63}, "lab.Reading.total"),
        ({"value": "1.5"}, "lab.Reading.value"),
        ({"value": False}, "lab.Reading.value"),
        ({"ok": 1}, "lab.Reading.ok"),
        ({"tag": 1.5}, "lab.Reading.tag"),
        ({"tag": True}, "lab.Reading.tag"),
        ({"samples": [1, "x"]}, "lab.Reading.samples[1]"),
        ({"labels": {"a": 0.5}}, "lab.Reading.labels['a']"),
        ({"next": {**GOOD, "count": "one"}}, "lab.Reading.count"),
    ],
)
def test_data_the_writer_would_accept_is_refused_naming_the_field(
    codec: AvroWireCodec, change: dict[str, Any], field: str
) -> None:
    """Bools, floats and overflowing ints for ints, strings for numbers: refused by path."""
    with pytest.raises(SchemaValidationError, match="field") as info:
        codec.encode({**GOOD, **change})
    assert field in str(info.value)


def test_missing_required_field_is_refused(codec: AvroWireCodec) -> None:
    """A field without a default must be present."""
    with pytest.raises(SchemaValidationError, match="count"):
        codec.encode({"total": 1, "value": 1.0, "ok": True})
