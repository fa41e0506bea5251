"""A structural reader/writer compatibility checker for JSON Schema.

``incompatibilities(reader, writer)`` answers: can every document valid under ``writer`` be
read by ``reader``, i.e. is it valid under ``reader`` too? It walks both schemas keyword by
keyword and reports each place where the reader is narrower, as ``#/json/pointer: reason``.

It follows Confluent's rules where they are structural: a property removed from a closed
content model, or added to an open one, is incompatible; newly required properties, narrowed
types, enums, bounds, lengths and patterns are incompatible; ``integer`` widens to ``number``.
Known differences from Confluent's checker: ``oneOf`` is treated as ``anyOf`` (exclusivity is
not proven), a writer's ``allOf`` is satisfied when one branch fits, ``not`` must be equal, any
other keyword the reader sets must be equal in the writer, and recursion through ``$ref`` stops
after a fixed depth (deeper levels are assumed compatible).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["incompatibilities"]

_ANNOTATIONS = frozenset(
    (
        "$schema",
        "$id",
        "id",
        "$comment",
        "$defs",
        "definitions",
        "title",
        "description",
        "default",
        "examples",
        "readOnly",
        "writeOnly",
        "deprecated",
        "$anchor",
    )
)
_LOWER_BOUNDS = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
_UPPER_BOUNDS = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")
_OBJECT_KEYWORDS = frozenset(("properties", "required", "additionalProperties"))
_ARRAY_KEYWORDS = frozenset(("items", "prefixItems"))
_HANDLED = (
    _ANNOTATIONS
    | _OBJECT_KEYWORDS
    | _ARRAY_KEYWORDS
    | frozenset(_LOWER_BOUNDS + _UPPER_BOUNDS)
    | frozenset(("type", "enum", "const", "multipleOf", "anyOf", "oneOf", "allOf", "$ref"))
)
_MAX_DEPTH = 32

Reasons = list[str]


def incompatibilities(
    reader: Any,
    writer: Any,
    *,
    reader_refs: Mapping[str, Any] | None = None,
    writer_refs: Mapping[str, Any] | None = None,
) -> Reasons:
    """Why ``reader`` rejects some document that ``writer`` accepts (empty when it cannot)."""
    walker = _Walker(reader, writer, reader_refs or {}, writer_refs or {})
    return walker.compare(reader, writer, "#", 0)


def _pointer(root: Any, fragment: str) -> Any:
    node = root
    for raw in fragment.lstrip("/").split("/"):
        if raw == "":
            continue
        part = raw.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def _resolve(schema: Any, root: Any, refs: Mapping[str, Any]) -> Any:
    """Follow ``$ref`` chains (local pointers, or reference names) a few steps."""
    for _ in range(8):
        if not isinstance(schema, dict) or not isinstance(schema.get("$ref"), str):
            return schema
        target, _, fragment = schema["$ref"].partition("#")
        document = refs.get(target, root) if target else root
        try:
            resolved = _pointer(document, fragment)
        except (KeyError, IndexError, ValueError, TypeError):
            return schema
        siblings = {k: v for k, v in schema.items() if k != "$ref"}
        schema = {**resolved, **siblings} if isinstance(resolved, dict) and siblings else resolved
    return schema


def _types(schema: dict[str, Any]) -> set[str] | None:
    raw = schema.get("type")
    if raw is None:
        return None
    return {raw} if isinstance(raw, str) else set(raw)


def _constraining(schema: dict[str, Any]) -> bool:
    return any(key not in _ANNOTATIONS for key in schema)


class _Walker:
    def __init__(
        self,
        reader_root: Any,
        writer_root: Any,
        reader_refs: Mapping[str, Any],
        writer_refs: Mapping[str, Any],
    ) -> None:
        self.reader_root, self.writer_root = reader_root, writer_root
        self.reader_refs, self.writer_refs = reader_refs, writer_refs

    def compare(self, reader: Any, writer: Any, path: str, depth: int) -> Reasons:
        if depth > _MAX_DEPTH:
            return []
        reader = _resolve(reader, self.reader_root, self.reader_refs)
        writer = _resolve(writer, self.writer_root, self.writer_refs)
        if writer is False:
            return []
        reader = {} if reader is True else reader
        writer = {} if writer is True else writer
        if reader is False:
            return [f"{path}: the reader accepts nothing"]
        if not isinstance(reader, dict) or not isinstance(writer, dict):
            return [] if reader == writer else [f"{path}: the schema is not an object"]
        if not _constraining(reader):
            return []
        return self._combinators(reader, writer, path, depth)

    def _combinators(
        self, reader: dict[str, Any], writer: dict[str, Any], path: str, depth: int
    ) -> Reasons:
        for key in ("anyOf", "oneOf"):
            if isinstance(writer.get(key), list):
                rest = {k: v for k, v in writer.items() if k != key}
                reasons: Reasons = []
                for index, branch in enumerate(writer[key]):
                    merged = {**rest, **branch} if isinstance(branch, dict) else branch
                    reasons += self.compare(reader, merged, f"{path}/{key}/{index}", depth + 1)
                return reasons
        if isinstance(writer.get("allOf"), list):
            rest = {k: v for k, v in writer.items() if k != "allOf"}
            tries = [
                self.compare(reader, {**rest, **b} if isinstance(b, dict) else b, path, depth + 1)
                for b in writer["allOf"]
            ]
            return [] if any(not t for t in tries) else tries[0]
        return self._reader_combinators(reader, writer, path, depth)

    def _reader_combinators(
        self, reader: dict[str, Any], writer: dict[str, Any], path: str, depth: int
    ) -> Reasons:
        for key in ("anyOf", "oneOf"):
            if isinstance(reader.get(key), list):
                rest = {k: v for k, v in reader.items() if k != key}
                branches = [{**rest, **b} if isinstance(b, dict) else b for b in reader[key]]
                tries = [self.compare(b, writer, path, depth + 1) for b in branches]
                if not any(not t for t in tries):
                    return [f"{path}: no branch of the reader's {key} accepts the writer's data"]
                reader = rest
        if isinstance(reader.get("allOf"), list):
            reasons: Reasons = []
            for index, branch in enumerate(reader["allOf"]):
                reasons += self.compare(branch, writer, f"{path}/allOf/{index}", depth + 1)
            reader = {k: v for k, v in reader.items() if k != "allOf"}
            return reasons + self._keywords(reader, writer, path, depth)
        return self._keywords(reader, writer, path, depth)

    def _keywords(
        self, reader: dict[str, Any], writer: dict[str, Any], path: str, depth: int
    ) -> Reasons:
        checks: list[Callable[[dict[str, Any], dict[str, Any], str], Reasons]] = [
            _check_type,
            _check_enum,
            _check_bounds,
            _check_other,
        ]
        reasons = [reason for check in checks for reason in check(reader, writer, path)]
        if _OBJECT_KEYWORDS & (reader.keys() | writer.keys()):
            reasons += self._objects(reader, writer, path, depth)
        if _ARRAY_KEYWORDS & reader.keys():
            reasons += self._arrays(reader, writer, path, depth)
        return reasons

    def _objects(
        self, reader: dict[str, Any], writer: dict[str, Any], path: str, depth: int
    ) -> Reasons:
        r_props: dict[str, Any] = reader.get("properties") or {}
        w_props: dict[str, Any] = writer.get("properties") or {}
        r_extra = reader.get("additionalProperties", True)
        w_extra = writer.get("additionalProperties", True)
        reasons: Reasons = []
        for name, r_schema in r_props.items():
            where = f"{path}/properties/{name}"
            if name in w_props:
                reasons += self.compare(r_schema, w_props[name], where, depth + 1)
            elif w_extra is not False and self.compare(r_schema, w_extra, where, depth + 1):
                reasons.append(f"{where}: property '{name}' added to an open content model")
        for name, w_schema in w_props.items():
            if name in r_props:
                continue
            where = f"{path}/properties/{name}"
            if r_extra is False:
                reasons.append(f"{where}: property '{name}' removed from a closed content model")
            elif self.compare(r_extra, w_schema, where, depth + 1):
                reasons.append(f"{where}: property '{name}' does not fit additionalProperties")
        if w_extra is not False and self.compare(r_extra, w_extra, path, depth + 1):
            reasons.append(f"{path}/additionalProperties: additional properties narrowed")
        newly = sorted(set(reader.get("required") or ()) - set(writer.get("required") or ()))
        reasons += [f"{path}/required: property '{name}' is newly required" for name in newly]
        return reasons

    def _arrays(
        self, reader: dict[str, Any], writer: dict[str, Any], path: str, depth: int
    ) -> Reasons:
        reasons: Reasons = []
        r_items, w_items = reader.get("items"), writer.get("items", True)
        if isinstance(r_items, dict | bool) and isinstance(w_items, dict | bool):
            reasons += self.compare(r_items, w_items, f"{path}/items", depth + 1)
        elif r_items is not None and r_items != w_items:
            reasons.append(f"{path}/items: the items changed")
        r_prefix, w_prefix = reader.get("prefixItems") or [], writer.get("prefixItems") or []
        for index, r_schema in enumerate(r_prefix):
            w_schema = w_prefix[index] if index < len(w_prefix) else w_items
            reasons += self.compare(r_schema, w_schema, f"{path}/prefixItems/{index}", depth + 1)
        return reasons


def _check_type(reader: dict[str, Any], writer: dict[str, Any], path: str) -> Reasons:
    r_types, w_types = _types(reader), _types(writer)
    if r_types is None:
        return []
    if w_types is None:
        if "enum" in writer or "const" in writer:
            return []
        return [f"{path}/type: type narrowed to {sorted(r_types)}"]
    if "number" in r_types:
        r_types = r_types | {"integer"}
    missing = sorted(w_types - r_types)
    return [f"{path}/type: type {t!r} is no longer accepted" for t in missing]


def _check_enum(reader: dict[str, Any], writer: dict[str, Any], path: str) -> Reasons:
    reasons: Reasons = []
    if "const" in reader:
        w_values = writer.get("enum", [writer["const"]] if "const" in writer else None)
        if w_values is None or any(value != reader["const"] for value in w_values):
            reasons.append(f"{path}/const: the value is restricted to {reader['const']!r}")
    if isinstance(reader.get("enum"), list):
        w_values = writer.get("enum", [writer["const"]] if "const" in writer else None)
        if w_values is None:
            reasons.append(f"{path}/enum: values are restricted to an enum")
        else:
            gone = [value for value in w_values if value not in reader["enum"]]
            reasons += [f"{path}/enum: value {value!r} is no longer accepted" for value in gone]
    return reasons


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_bounds(reader: dict[str, Any], writer: dict[str, Any], path: str) -> Reasons:
    reasons: Reasons = []
    for keyword in _LOWER_BOUNDS + _UPPER_BOUNDS:
        if keyword not in reader:
            continue
        r_value, w_value = reader[keyword], writer.get(keyword)
        if not (_is_number(r_value) and _is_number(w_value)):
            if r_value != w_value:
                reasons.append(f"{path}/{keyword}: {keyword} {r_value!r} was added or changed")
            continue
        narrowed = w_value < r_value if keyword in _LOWER_BOUNDS else w_value > r_value
        if narrowed:
            reasons.append(f"{path}/{keyword}: {keyword} narrowed from {w_value} to {r_value}")
    if "multipleOf" in reader:
        r_step, w_step = reader["multipleOf"], writer.get("multipleOf")
        if not (_is_number(w_step) and _is_number(r_step) and w_step % r_step == 0):
            reasons.append(f"{path}/multipleOf: multipleOf {r_step!r} was added or changed")
    return reasons


def _check_other(reader: dict[str, Any], writer: dict[str, Any], path: str) -> Reasons:
    return [
        f"{path}/{keyword}: {keyword} was added or changed"
        for keyword, value in reader.items()
        if keyword not in _HANDLED and writer.get(keyword) != value
    ]
