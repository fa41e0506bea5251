"""``normalize=true``: one form for schemas that mean the same, as Confluent's registry has.

- **Avro**: fastavro's parsed schema: every named type by its full name (no separate
  ``namespace``), a named type written out once and referred to by name after that, a
  primitive written as ``"string"`` rather than ``{"type": "string"}``, aliases sorted; docs,
  defaults, logical types and custom properties are kept.
- **JSON Schema**: object keys sorted, compact (whitespace and key order never mattered).
- **Protobuf**: the compiled descriptor with imports and each message's fields sorted, so
  the same definitions written differently (base64 descriptor or text, comments, option and
  field order) are one schema; the text is stored as given.

In every format the references are sorted and duplicates dropped.
"""

from __future__ import annotations

import json
from typing import Any

import fastavro

from schemas.compatibility import Resolved, compiled_proto
from schemas.errors import InvalidSchemaError
from schemas.model import Schema, SchemaType

__all__ = ["identity", "normalized"]


def normalized(resolved: Resolved) -> Resolved:
    """The schema in its normal form, with the same dependencies."""
    schema = resolved.schema
    refs = tuple(sorted(set(schema.references), key=lambda r: (r.name, r.subject, r.version)))
    text = schema.text
    if schema.type is SchemaType.AVRO:
        text = _compact(_avro(resolved))
    elif schema.type is SchemaType.JSON:
        text = _compact(schema.parsed())
    return Resolved(Schema(text, schema.type, refs), resolved.dependencies)


def identity(resolved: Resolved, *, normalize: bool = False) -> str:
    """The key under which equal schemas share one id (see :meth:`Schema.identity`)."""
    if normalize:
        resolved = normalized(resolved)
    schema = resolved.schema
    if schema.type is not SchemaType.PROTOBUF:
        return schema.identity()
    return schema.identity(compiled_proto(resolved).canonical(normalize=normalize))


def _compact(document: Any) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _avro(resolved: Resolved) -> Any:
    named: dict[str, Any] = {}
    try:
        for _, dependency in resolved.dependencies:
            fastavro.parse_schema(dependency.parsed(), named_schemas=named, _write_hint=False)
        parsed = fastavro.parse_schema(
            resolved.schema.parsed(), named_schemas=named, _write_hint=False
        )
    except InvalidSchemaError:
        raise
    except Exception as exc:
        raise InvalidSchemaError(f"invalid Avro schema: {exc}") from exc
    return _collapse(parsed)


def _collapse(node: Any) -> Any:
    if isinstance(node, list):
        return [_collapse(item) for item in node]
    if not isinstance(node, dict):
        return node
    if set(node) == {"type"} and isinstance(node["type"], str):
        return node["type"]
    out = {key: _collapse(value) for key, value in node.items()}
    if isinstance(out.get("aliases"), list):
        out["aliases"] = sorted(out["aliases"])
    return out
