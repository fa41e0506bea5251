"""JSON Schema compatibility, keyword by keyword: the rules :mod:`schemas.json_compat` applies.

Each rule answers, for one keyword or keyword family, whether every instance the writer's
schema accepts is still accepted by the reader's, and says why not as ``(type, where: why)``
with Confluent's difference type names. A rule only looks at keywords that can affect the
writer's instances: a string rule does not apply when the writer never writes strings.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from fractions import Fraction
from typing import Any, Protocol

__all__ = [
    "Compare",
    "Reason",
    "arrays",
    "bounds",
    "can_be",
    "objects",
    "strings",
    "type_set",
    "types",
]

Reason = tuple[str, str]
Schema = dict[str, Any]


class Compare(Protocol):
    """The walker's recursion: why ``reader`` rejects something ``writer`` accepts."""

    def __call__(self, reader: Any, writer: Any, path: str) -> list[Reason]: ...


_NUMERIC = ("number", "integer")
# (keyword, lower?, the types it applies to, Confluent's "added"/"narrowed" types)
_BOUNDS: tuple[tuple[str, bool, tuple[str, ...], str], ...] = (
    ("minLength", True, ("string",), "MIN_LENGTH"),
    ("maxLength", False, ("string",), "MAX_LENGTH"),
    ("minItems", True, ("array",), "MIN_ITEMS"),
    ("maxItems", False, ("array",), "MAX_ITEMS"),
    ("minProperties", True, ("object",), "MIN_PROPERTIES"),
    ("maxProperties", False, ("object",), "MAX_PROPERTIES"),
)


def type_set(schema: Schema) -> set[str] | None:
    """The declared types (``integer`` implied by ``number``), or ``None`` for any."""
    raw = schema.get("type")
    if raw is None:
        return None
    found = {raw} if isinstance(raw, str) else {t for t in raw if isinstance(t, str)}
    return found | {"integer"} if "number" in found else found


def can_be(writer: Schema, *kinds: str) -> bool:
    """Whether the writer may write an instance of one of ``kinds``."""
    declared = type_set(writer)
    return declared is None or bool(declared & set(kinds))


def types(reader: Schema, writer: Schema, path: str) -> Iterator[Reason]:
    """``type``: every type the writer writes is one the reader reads (``integer`` fits
    ``number``, not the reverse)."""
    accepted, written = type_set(reader), type_set(writer)
    if accepted is None:
        return
    if written is None:
        yield "TYPE_NARROWED", f"{path}/type: the type is narrowed to {sorted(accepted)}"
        return
    for name in sorted(written - accepted):
        yield "TYPE_NARROWED", f"{path}/type: type {name!r} is no longer accepted"


def _number(value: Any) -> Fraction | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return Fraction(str(value)) if isinstance(value, float) else Fraction(value)


def _limit(schema: Schema, lower: bool) -> tuple[Fraction, bool] | None:
    """The tightest numeric limit: ``(value, exclusive)`` (draft 4 boolean forms too)."""
    plain = "minimum" if lower else "maximum"
    strict = "exclusiveMinimum" if lower else "exclusiveMaximum"
    found: list[tuple[Fraction, bool]] = []
    value = _number(schema.get(plain))
    if value is not None:
        found.append((value, schema.get(strict) is True))
    value = _number(schema.get(strict))
    if value is not None:
        found.append((value, True))
    if not found:
        return None
    pick = max if lower else min
    best = pick(v for v, _ in found)
    return best, any(v == best and e for v, e in found)


def _covers(reader: tuple[Fraction, bool], writer: tuple[Fraction, bool], lower: bool) -> bool:
    (r_value, r_strict), (w_value, w_strict) = reader, writer
    if r_value == w_value:
        return w_strict or not r_strict
    return w_value > r_value if lower else w_value < r_value


def bounds(reader: Schema, writer: Schema, path: str) -> Iterator[Reason]:
    """Numeric limits, lengths, item and property counts and ``multipleOf`` may widen or
    go away in the reader, never narrow or appear."""
    if can_be(writer, *_NUMERIC):
        for lower, kind in ((True, "MINIMUM"), (False, "MAXIMUM")):
            limit = _limit(reader, lower)
            if limit is None:
                continue
            given = _limit(writer, lower)
            if given is None:
                yield f"{kind}_ADDED", f"{path}: a {kind.lower()} {float(limit[0])} is added"
            elif not _covers(limit, given, lower):
                yield (
                    f"{kind}_{'INCREASED' if lower else 'DECREASED'}",
                    (
                        f"{path}: the {kind.lower()} narrows from {float(given[0])} "
                        f"to {float(limit[0])}"
                    ),
                )
        yield from _multiple_of(reader, writer, path)
    for keyword, lower, kinds, kind in _BOUNDS:
        if keyword not in reader or not can_be(writer, *kinds):
            continue
        r_value, w_value = _number(reader[keyword]), _number(writer.get(keyword))
        if r_value is None:
            continue
        if w_value is None:
            yield f"{kind}_ADDED", f"{path}/{keyword}: {keyword} {reader[keyword]} is added"
        elif (w_value < r_value) if lower else (w_value > r_value):
            narrowed = "INCREASED" if lower else "DECREASED"
            yield (
                f"{kind}_{narrowed}",
                (
                    f"{path}/{keyword}: {keyword} narrows "
                    f"from {writer[keyword]} to {reader[keyword]}"
                ),
            )


def _multiple_of(reader: Schema, writer: Schema, path: str) -> Iterator[Reason]:
    step = _number(reader.get("multipleOf"))
    if step is None or step == 0:
        return
    given = _number(writer.get("multipleOf"))
    integers = type_set(writer) == {"integer"}
    if given is not None and given != 0 and (given / step).denominator == 1:
        return
    if given is None and integers and step == 1:
        return
    kind = "MULTIPLE_OF_ADDED" if given is None else "MULTIPLE_OF_CHANGED"
    yield kind, f"{path}/multipleOf: values must now be multiples of {reader['multipleOf']}"


def strings(reader: Schema, writer: Schema, path: str) -> Iterator[Reason]:
    """``pattern`` may go away in the reader, never appear or change."""
    if "pattern" in reader and can_be(writer, "string"):
        if "pattern" not in writer:
            yield "PATTERN_ADDED", f"{path}/pattern: pattern {reader['pattern']!r} is added"
        elif writer["pattern"] != reader["pattern"]:
            yield "PATTERN_CHANGED", f"{path}/pattern: the pattern changed"


# -- objects --------------------------------------------------------------------------------


class _Side:
    """How one schema constrains an object's properties, by property name."""

    def __init__(self, schema: Schema, evaluated: frozenset[str]) -> None:
        self.props: dict[str, Any] = dict(schema.get("properties") or {})
        self.patterns: dict[str, Any] = dict(schema.get("patternProperties") or {})
        self.required = set(schema.get("required") or ())
        if "additionalProperties" in schema:
            self.rest: Any = schema["additionalProperties"]
            self.unevaluated = False
        else:
            self.rest = schema.get("unevaluatedProperties", True)
            self.unevaluated = "unevaluatedProperties" in schema
        self.evaluated = evaluated
        self.names = schema.get("propertyNames")

    def matching(self, name: str) -> list[Any]:
        return [s for p, s in self.patterns.items() if _search(p, name)]

    def schema_for(self, name: str) -> Any:
        """The schema a property called ``name`` must satisfy (``True``: anything)."""
        found = ([self.props[name]] if name in self.props else []) + self.matching(name)
        if found:
            return found[0] if len(found) == 1 else {"allOf": found}
        if self.unevaluated and name in self.evaluated:
            return True
        return self.rest

    @property
    def open(self) -> bool:
        return self.rest is True or self.rest == {}


def _search(pattern: str, name: str) -> bool:
    try:
        return re.search(pattern, name) is not None
    except re.error:
        return False


def objects(
    reader: Schema,
    writer: Schema,
    path: str,
    compare: Compare,
    evaluated: Callable[[Schema], frozenset[str]],
) -> Iterator[Reason]:
    """Properties, pattern properties, additional and unevaluated properties, ``required``,
    dependencies, ``propertyNames``: every property the writer may write fits the reader."""
    r, w = _Side(reader, evaluated(reader)), _Side(writer, evaluated(writer))
    for name in sorted(r.props.keys() | w.props.keys()):
        yield from _property(r, w, name, f"{path}/properties/{name}", compare)
    yield from _patterns(r, w, path, compare)
    yield from _rest(r, w, path, compare)
    for name in sorted(r.required - w.required):
        yield "REQUIRED_ATTRIBUTE_ADDED", f"{path}/required/{name}: property '{name}' is required"
    yield from _dependencies(reader, writer, w, path, compare)


def _property(r: _Side, w: _Side, name: str, where: str, compare: Compare) -> Iterator[Reason]:
    written = w.schema_for(name)
    if written is False:
        return
    problems = compare(r.schema_for(name), written, where)
    if not problems:
        return
    if name in r.props and name in w.props:
        yield from problems
    elif name in w.props:
        if r.schema_for(name) is False:
            yield (
                "PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL",
                (f"{where}: property '{name}' is removed from a closed content model"),
            )
        else:
            yield (
                "PROPERTY_REMOVED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
                (
                    f"{where}: property '{name}' is removed and the reader's other properties "
                    f"do not accept it: {problems[0][1]}"
                ),
            )
    elif w.open:
        yield (
            "PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL",
            (f"{where}: property '{name}' is added to an open content model"),
        )
    else:
        yield (
            "PROPERTY_ADDED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
            (
                f"{where}: property '{name}' is added but the writer's other properties may "
                f"hold other values: {problems[0][1]}"
            ),
        )


def _patterns(r: _Side, w: _Side, path: str, compare: Compare) -> Iterator[Reason]:
    for pattern, schema in r.patterns.items():
        where = f"{path}/patternProperties/{pattern}"
        same = [s for p, s in w.patterns.items() if p == pattern]
        candidates = same or [w.rest, *w.patterns.values()]
        for candidate in candidates:
            if candidate is not False and compare(schema, candidate, where):
                yield (
                    "PATTERN_PROPERTIES_NARROWED",
                    (f"{where}: properties matching {pattern!r} are narrowed"),
                )
                break


def _rest(r: _Side, w: _Side, path: str, compare: Compare) -> Iterator[Reason]:
    keyword = "unevaluatedProperties" if r.unevaluated else "additionalProperties"
    where = f"{path}/{keyword}"
    others = [s for p, s in w.patterns.items() if p not in r.patterns]
    for candidate in [w.rest, *others]:
        if candidate is False or not compare(r.rest, candidate, where):
            continue
        kind = "REMOVED" if r.rest is False else "NARROWED"
        yield f"ADDITIONAL_PROPERTIES_{kind}", f"{where}: other properties are narrowed"
        return


def _dependencies(
    reader: Schema, writer: Schema, w: _Side, path: str, compare: Compare
) -> Iterator[Reason]:
    r_arrays, r_schemas = _split_dependencies(reader)
    w_arrays, w_schemas = _split_dependencies(writer)
    for name, needed in sorted(r_arrays.items()):
        if w.schema_for(name) is False:
            continue
        missing = sorted(needed - w_arrays.get(name, set()) - w.required)
        if missing:
            yield (
                "DEPENDENCY_ARRAY_EXTENDED",
                (f"{path}/dependencies/{name}: '{name}' now needs {missing}"),
            )
    for name, schema in sorted(r_schemas.items()):
        where = f"{path}/dependencies/{name}"
        if w.schema_for(name) is False:
            continue
        if name in w_schemas and not compare(schema, w_schemas[name], where):
            continue
        plain = {k: v for k, v in writer.items() if k not in _DEPENDENCY_KEYWORDS}
        if compare(schema, plain, where):
            yield "DEPENDENCY_SCHEMA_ADDED", f"{where}: a dependent schema for '{name}' is added"
    if "propertyNames" in reader:
        yield from _names(reader["propertyNames"], w, path, compare)


_DEPENDENCY_KEYWORDS = ("dependencies", "dependentSchemas", "dependentRequired")


def _split_dependencies(schema: Schema) -> tuple[dict[str, set[str]], dict[str, Any]]:
    arrays = {k: set(v) for k, v in (schema.get("dependentRequired") or {}).items()}
    schemas = dict(schema.get("dependentSchemas") or {})
    for name, value in (schema.get("dependencies") or {}).items():
        if isinstance(value, list):
            arrays[name] = set(value)
        else:
            schemas[name] = value
    return arrays, schemas


def _names(accepted: Any, w: _Side, path: str, compare: Compare) -> Iterator[Reason]:
    where = f"{path}/propertyNames"
    if w.names is not None:
        if compare(accepted, w.names, where):
            yield "PROPERTY_NAMES_NARROWED", f"{where}: property names are narrowed"
        return
    if w.rest is False and not w.patterns:
        names = [n for n, s in w.props.items() if s is not False]
        bad = [n for n in names if compare(accepted, {"const": n}, where)]
        if bad:
            yield "PROPERTY_NAMES_NARROWED", f"{where}: property names {bad} are not accepted"
        return
    if accepted is not True and accepted != {}:
        yield "PROPERTY_NAMES_ADDED", f"{where}: property names are restricted"


# -- arrays ---------------------------------------------------------------------------------


def _items(schema: Schema) -> tuple[list[Any], Any, str]:
    """``(positional item schemas, the schema of the others, the keyword for the others)``."""
    fallback = schema.get("unevaluatedItems", True)
    if "prefixItems" in schema:
        return list(schema["prefixItems"]), schema.get("items", fallback), "items"
    items = schema.get("items")
    if isinstance(items, list):
        return items, schema.get("additionalItems", fallback), "additionalItems"
    if "items" in schema:
        return [], items, "items"
    return [], fallback, "unevaluatedItems" if "unevaluatedItems" in schema else "items"


def arrays(
    reader: Schema, writer: Schema, path: str, compare: Compare, *, modern: bool = True
) -> Iterator[Reason]:
    """Positional items, the items after them, ``contains`` and ``uniqueItems``: every item
    the writer may write at a position fits the reader's schema for that position."""
    r_prefix, r_rest, r_word = _items(reader)
    w_prefix, w_rest, _ = _items(writer)
    yield from _positions(r_prefix, w_prefix, r_rest, w_rest, writer, path, compare)
    longest = _number(writer.get("maxItems"))
    room = longest is None or len(w_prefix) < longest
    if room and w_rest is not False and False not in w_prefix:
        yield from compare(r_rest, w_rest, f"{path}/{r_word}")
    if "additionalItems" in reader and not isinstance(reader.get("items"), list):
        # No effect without a tuple, but a narrowing change is refused, as Confluent does.
        extra = writer.get("additionalItems", True)
        yield from compare(reader["additionalItems"], extra, f"{path}/additionalItems")
    if reader.get("uniqueItems") is True and writer.get("uniqueItems") is not True:
        yield "UNIQUE_ITEMS_ADDED", f"{path}/uniqueItems: items must now be unique"
    if not modern:  # minContains and maxContains arrived in 2019-09
        reader = {k: v for k, v in reader.items() if k not in ("minContains", "maxContains")}
        writer = {k: v for k, v in writer.items() if k not in ("minContains", "maxContains")}
    yield from _contains(reader, writer, path, compare)


def _positions(
    r_prefix: list[Any],
    w_prefix: list[Any],
    r_rest: Any,
    w_rest: Any,
    writer: Schema,
    path: str,
    compare: Compare,
) -> Iterator[Reason]:
    """Each position the writer may fill is read by the reader's schema for it."""
    longest = _number(writer.get("maxItems"))
    for index in range(max(len(r_prefix), len(w_prefix))):
        if longest is not None and index >= longest:
            return
        written = w_prefix[index] if index < len(w_prefix) else w_rest
        if written is False:
            return
        accepted = r_prefix[index] if index < len(r_prefix) else r_rest
        yield from compare(accepted, written, f"{path}/items/{index}")


def _contains(reader: Schema, writer: Schema, path: str, compare: Compare) -> Iterator[Reason]:
    if "contains" not in reader:
        return
    where = f"{path}/contains"
    least = _number(reader.get("minContains", 1)) or 0
    if least > 0:
        given = _number(writer.get("minContains", 1)) if "contains" in writer else None
        same = "contains" in writer and not compare(reader["contains"], writer["contains"], where)
        if not (same and given is not None and given >= least):
            yield (
                "MIN_CONTAINS_INCREASED" if same else "CONTAINS_ADDED",
                (f"{where}: arrays must now hold at least {least} matching items"),
            )
    most = _number(reader.get("maxContains"))
    if most is not None:
        w_most = _number(writer.get("maxContains"))
        within = w_most is not None and w_most <= most and "contains" in writer
        within = within and not compare(writer["contains"], reader["contains"], where)
        shortest = _number(writer.get("maxItems"))
        if not within and not (shortest is not None and shortest <= most):
            yield "MAX_CONTAINS_DECREASED", f"{where}: at most {most} items may match now"
