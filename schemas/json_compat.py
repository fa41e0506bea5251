"""A reader/writer compatibility checker for JSON Schema, by the keywords' meaning.

``incompatibilities(reader, writer)`` answers: can every document valid under ``writer`` be
read by ``reader``, i.e. is it valid under ``reader`` too? It walks both schemas and reports
each place where the reader is narrower as ``(Confluent's difference type, "#/pointer: why")``.

The walk, in order (the keyword rules are in :mod:`schemas.json_rules`):

1. ``$ref`` is followed (local pointers and reference names); a pair of schemas already being
   compared is assumed compatible, so recursive schemas terminate.
2. ``false`` as the writer accepts nothing: compatible. ``true``/``{}`` as the reader: compatible.
3. A writer ``anyOf``/``oneOf`` is split: each writer branch must be readable.
4. A reader ``allOf`` is split: each reader branch must read the whole writer.
5. A reader ``anyOf``/``oneOf``: some reader branch must read the writer (branches are matched
   by content, not position).
6. A writer ``allOf``: the reader must read one writer branch, or all of them merged.
7. A writer ``enum``/``const`` is a finite set: each of its values must validate against the
   reader (checked with :mod:`jsonschema`), and nothing else matters.
8. ``not``, ``if``/``then``/``else``, then every other keyword by its rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jsonschema
import jsonschema.validators
import referencing
import referencing.jsonschema

from schemas import json_rules
from schemas.json_rules import Reason

__all__ = ["incompatibilities"]

_ANNOTATIONS = frozenset(
    (
        "$schema",
        "$id",
        "id",
        "$comment",
        "$defs",
        "definitions",
        "$anchor",
        "$dynamicAnchor",
        "$vocabulary",
        "title",
        "description",
        "default",
        "examples",
        "readOnly",
        "writeOnly",
        "deprecated",
        "format",
        "contentEncoding",
        "contentMediaType",
        "contentSchema",
    )
)
# Keywords that constrain instances but are not modelled: they must stay equal.
_UNMODELLED = ("$dynamicRef", "$recursiveRef")
_COMBINATORS = ("anyOf", "oneOf", "allOf", "not", "if", "then", "else")
_SPREAD = ("minContains", "maxContains", "if", "then", "else")  # not merged across allOf
_MAX_STEPS = 20_000
_EXCLUDED = "$choreo:excluded"  # a split writer oneOf branch: the other branches' data is not in it

Schema = dict[str, Any]


def incompatibilities(
    reader: Any,
    writer: Any,
    *,
    reader_refs: Mapping[str, Any] | None = None,
    writer_refs: Mapping[str, Any] | None = None,
) -> list[Reason]:
    """Why ``reader`` rejects some document that ``writer`` accepts (empty when it cannot)."""
    walker = _Walker(_Document(reader, reader_refs or {}), _Document(writer, writer_refs or {}))
    found = walker.compare(reader, writer, "#")
    return list(dict.fromkeys(found))


class _Document:
    """One side's root schema, its references and a validator for its values."""

    def __init__(self, root: Any, refs: Mapping[str, Any]) -> None:
        self.root, self.refs = root, refs
        dialect = str(root.get("$schema", "")) if isinstance(root, dict) else ""
        self.modern = "2019-09" in dialect or "2020-12" in dialect  # else draft 7 or older
        default = jsonschema.Draft7Validator
        cls = jsonschema.validators.validator_for(root, default=default)
        resources = [
            (name, referencing.Resource.from_contents(doc, referencing.jsonschema.DRAFT7))
            for name, doc in refs.items()
            if isinstance(doc, dict | bool)
        ]
        self.validator = cls(root, registry=referencing.Registry().with_resources(resources))

    def accepts(self, schema: Any, value: Any) -> bool:
        try:
            return bool(self.validator.evolve(schema=schema).is_valid(value))
        except Exception:  # an unresolvable $ref or a bad regex: not provably accepted
            return False

    def resolve(self, schema: Any) -> Any:
        """Follow ``$ref`` (a local pointer or a reference name) a few steps."""
        for _ in range(16):
            if not isinstance(schema, dict) or not isinstance(schema.get("$ref"), str):
                return schema
            target, _, fragment = schema["$ref"].partition("#")
            document = self.refs.get(target, self.root) if target else self.root
            try:
                found = _pointer(document, fragment)
            except (KeyError, IndexError, ValueError, TypeError):
                return schema
            siblings = {k: v for k, v in schema.items() if k != "$ref"}
            if not self.modern:  # before 2019-09, keywords beside $ref are ignored
                siblings = {}
            schema = {**found, **siblings} if isinstance(found, dict) and siblings else found
        return schema


def _pointer(root: Any, fragment: str) -> Any:
    node = root
    for raw in fragment.lstrip("/").split("/"):
        if raw == "":
            continue
        part = raw.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def _constraining(schema: Schema) -> bool:
    return any(key not in _ANNOTATIONS for key in schema)


def _without(schema: Schema, *keys: str) -> Schema:
    return {k: v for k, v in schema.items() if k not in keys}


def _with_rest(rest: Schema, branch: Any) -> Any:
    if not _constraining(rest):
        return branch
    return {"allOf": [rest, branch]}


class _Walker:
    def __init__(self, reader: _Document, writer: _Document) -> None:
        self.reader, self.writer = reader, writer
        self._active: set[tuple[int, int]] = set()
        self._steps = 0

    def compare(self, reader: Any, writer: Any, path: str) -> list[Reason]:
        reader, writer = self.reader.resolve(reader), self.writer.resolve(writer)
        if writer is False or reader is True:
            return []
        writer = {} if writer is True else writer
        if reader is False:
            return [("SCHEMA_NARROWED", f"{path}: the reader accepts nothing")]
        if not isinstance(reader, dict) or not isinstance(writer, dict):
            return [] if reader == writer else [("TYPE_CHANGED", f"{path}: not a schema")]
        if not _constraining(reader):
            return []
        key = (id(reader), id(writer))
        self._steps += 1
        if key in self._active:
            return []  # recursion: assume the pair compatible while proving it
        if self._steps > _MAX_STEPS:
            return [("TOO_COMPLEX", f"{path}: the schemas are too complex to compare")]
        self._active.add(key)
        try:
            return self._writer_unions(reader, writer, path)
        finally:
            self._active.discard(key)

    def _writer_unions(self, reader: Schema, writer: Schema, path: str) -> list[Reason]:
        if "const" in writer or isinstance(writer.get("enum"), list):
            return self._values(reader, writer, path)
        for word in ("anyOf", "oneOf"):
            if isinstance(writer.get(word), list):
                rest = _without(writer, word)
                reasons: list[Reason] = []
                for index, branch in enumerate(writer[word]):
                    where = f"{path}/{word}/{index}"
                    part = _with_rest(rest, branch)
                    if word == "oneOf" and isinstance(part, dict):  # data matches no other
                        others = writer[word][:index] + writer[word][index + 1 :]
                        part = {**part, _EXCLUDED: others + part.get(_EXCLUDED, [])}
                    reasons += self.compare(reader, part, where)
                return reasons
        return self._reader_all(reader, writer, path)

    def _reader_all(self, reader: Schema, writer: Schema, path: str) -> list[Reason]:
        if not isinstance(reader.get("allOf"), list):
            return self._reader_unions(reader, writer, path)
        reasons: list[Reason] = []
        for index, branch in enumerate(reader["allOf"]):
            reasons += self.compare(branch, writer, f"{path}/allOf/{index}")
        rest = _without(reader, "allOf")
        if "unevaluatedProperties" in rest:  # the branches' properties stay evaluated
            seen = dict.fromkeys(self._evaluated({"allOf": reader["allOf"]}), True)
            rest["properties"] = {**seen, **(rest.get("properties") or {})}
        return reasons + self.compare(rest, writer, path)

    def _reader_unions(self, reader: Schema, writer: Schema, path: str) -> list[Reason]:
        for word in ("anyOf", "oneOf"):
            if not isinstance(reader.get(word), list):
                continue
            rest = _without(reader, word)
            branches = [_with_rest(rest, branch) for branch in reader[word]]
            exclusive = word == "oneOf"
            if self._read_by_one(branches, writer, path, exclusive=exclusive):
                return []
            declared = writer.get("type")
            if isinstance(declared, list) and len(declared) > 1:
                parts = [{**writer, "type": kind} for kind in declared]
                if all(self._read_by_one(branches, p, path, exclusive=exclusive) for p in parts):
                    return []
            if exclusive and any(not self.compare(b, writer, path) for b in branches):
                why = "the writer's data may match more than one branch"
                return [("ONEOF_BRANCHES_OVERLAP", f"{path}/oneOf: {why}")]
            return [("SUM_TYPE_NARROWED", f"{path}/{word}: no branch reads the writer's data")]
        return self._writer_all(reader, writer, path)

    def _read_by_one(
        self, branches: list[Any], writer: Schema, path: str, *, exclusive: bool
    ) -> bool:
        """Some branch reads the writer's data (``exclusive``: and no other branch matches it,
        as ``oneOf`` needs; Confluent treats ``oneOf`` as ``anyOf``)."""
        for index, branch in enumerate(branches):
            if self.compare(branch, writer, path):
                continue
            others = branches[:index] + branches[index + 1 :]
            if not exclusive or all(self._disjoint(writer, other) for other in others):
                return True
        return False

    def _disjoint(self, writer: Schema, branch: Any) -> bool:
        """Whether no document of the writer can match ``branch`` (provably)."""
        branch = self.reader.resolve(branch)
        if branch is False:
            return True
        if not isinstance(branch, dict):
            return False
        if isinstance(branch.get("allOf"), list):
            return any(self._disjoint(writer, part) for part in branch["allOf"])
        written, matched = self._types(writer), json_rules.type_set(branch)
        if written is not None and matched is not None and not written & matched:
            return True
        if _discriminated(writer, branch):
            return True
        excluded = writer.get(_EXCLUDED, [])
        return any(not self.compare(other, branch, "#") for other in excluded)

    def _writer_all(self, reader: Schema, writer: Schema, path: str) -> list[Reason]:
        if not isinstance(writer.get("allOf"), list):
            return self._logic(reader, writer, path)
        rest = _without(writer, "allOf")
        parts = [self.writer.resolve(b) for b in writer["allOf"]]
        tries = [_with_rest(rest, part) for part in parts]
        merged = _merge([rest, *parts])
        if merged is not None:
            tries.insert(0, merged)
        first: list[Reason] | None = None
        for candidate in tries:
            reasons = self.compare(reader, candidate, path)
            if not reasons:
                return []
            first = reasons if first is None else first
        return first or []

    def _types(self, writer: Schema) -> set[str] | None:
        """The types a writer may write, its ``allOf`` branches' declarations included."""
        found = json_rules.type_set(writer)
        for raw in writer.get("allOf") or []:
            part = self.writer.resolve(raw)
            declared = json_rules.type_set(part) if isinstance(part, dict) else None
            if declared is not None:
                found = declared if found is None else found & declared
        return found

    def _values(self, reader: Schema, writer: Schema, path: str) -> list[Reason]:
        """A writer ``enum``/``const`` is a finite set: each value must validate (exact)."""
        values = [writer["const"]] if "const" in writer else writer["enum"]
        valid = [v for v in values if self.writer.accepts(_without(writer, _EXCLUDED), v)]
        bad = [v for v in valid if not self.reader.accepts(reader, v)]
        kind = "ENUM_ARRAY_CHANGED" if "const" in writer else "ENUM_ARRAY_NARROWED"
        return [(kind, f"{path}: value {v!r} is no longer accepted") for v in bad]

    def _logic(self, reader: Schema, writer: Schema, path: str) -> list[Reason]:
        reasons: list[Reason] = []
        if "not" in reader:
            reasons += self._not(reader["not"], writer, path)
        if "if" in reader or "then" in reader or "else" in reader:
            reasons += self._conditional(reader, writer, path)
        plain_reader = _without(reader, *_COMBINATORS)
        return reasons + self._keywords(plain_reader, _without(writer, *_COMBINATORS), path)

    def _not(self, excluded: Any, writer: Schema, path: str) -> list[Reason]:
        where = f"{path}/not"
        if "not" in writer and not self.compare(writer["not"], excluded, where):
            return []  # the reader excludes no more than the writer did
        excluded = self.reader.resolve(excluded)
        if excluded is False:
            return []
        if isinstance(excluded, dict) and _only_types(excluded) and _disjoint(writer, excluded):
            return []
        return [("NOT_TYPE_EXTENDED", f"{where}: the reader now excludes values it read before")]

    def _conditional(self, reader: Schema, writer: Schema, path: str) -> list[Reason]:
        parts = ("if", "then", "else")
        if all(reader.get(p) == writer.get(p) for p in parts):
            return []
        then_ok = not self.compare(reader.get("then", True), writer, f"{path}/then")
        else_ok = not self.compare(reader.get("else", True), writer, f"{path}/else")
        if then_ok and else_ok:
            return []
        return [("CONDITIONAL_CHANGED", f"{path}/if: the conditional schema changed")]

    def _keywords(self, reader: Schema, writer: Schema, path: str) -> list[Reason]:
        reasons = [
            *json_rules.types(reader, writer, path),
            *self._reader_values(reader, writer, path),
            *json_rules.bounds(reader, writer, path),
            *json_rules.strings(reader, writer, path),
        ]
        if json_rules.can_be(writer, "object") and _any(reader, _OBJECT_WORDS):
            reasons += json_rules.objects(reader, writer, path, self.compare, self._evaluated)
        if json_rules.can_be(writer, "array") and _any(reader, _ARRAY_WORDS):
            modern = self.reader.modern
            reasons += json_rules.arrays(reader, writer, path, self.compare, modern=modern)
        for word in _UNMODELLED:
            if word in reader and reader[word] != writer.get(word):
                reasons.append(("KEYWORD_CHANGED", f"{path}/{word}: {word} changed"))
        return reasons

    def _reader_values(self, reader: Schema, writer: Schema, path: str) -> list[Reason]:
        if "const" in reader:
            return [("ENUM_ARRAY_CHANGED", f"{path}/const: only {reader['const']!r} is accepted")]
        if isinstance(reader.get("enum"), list):
            return [("ENUM_ARRAY_NARROWED", f"{path}/enum: values are restricted to an enum")]
        return []

    def _evaluated(self, schema: Schema) -> frozenset[str]:
        """Property names that in-place applicators (``allOf``, ``$ref``...) evaluate."""
        names: set[str] = set()
        stack: list[Any] = [schema]
        seen: set[int] = set()
        while stack:
            node = stack.pop()
            for resolved in (self.reader.resolve(node), self.writer.resolve(node)):
                if not isinstance(resolved, dict) or id(resolved) in seen:
                    continue
                seen.add(id(resolved))
                names.update(resolved.get("properties") or {})
                for word in ("allOf", "anyOf", "oneOf"):
                    stack.extend(resolved.get(word) or [])
                stack.extend(resolved[w] for w in ("then", "else") if w in resolved)
        return frozenset(names)


_OBJECT_WORDS = (
    "properties",
    "patternProperties",
    "additionalProperties",
    "unevaluatedProperties",
    "required",
    "dependencies",
    "dependentRequired",
    "dependentSchemas",
    "propertyNames",
)
_ARRAY_WORDS = (
    "items",
    "prefixItems",
    "additionalItems",
    "unevaluatedItems",
    "contains",
    "uniqueItems",
)


def _any(schema: Schema, words: tuple[str, ...]) -> bool:
    return any(word in schema for word in words)


def _disjoint(first: Schema, second: Schema) -> bool:
    one, other = json_rules.type_set(first), json_rules.type_set(second)
    return one is not None and other is not None and not one & other


def _discriminated(writer: Schema, branch: Schema) -> bool:
    """A property both sides pin to ``const``/``enum`` values that do not overlap, and that
    one of them requires."""
    w_props, b_props = writer.get("properties") or {}, branch.get("properties") or {}
    required = set(writer.get("required") or ()) | set(branch.get("required") or ())
    for name in required & w_props.keys() & b_props.keys():
        mine, theirs = _values_of(w_props[name]), _values_of(b_props[name])
        if mine is not None and theirs is not None and not any(v in theirs for v in mine):
            return True
    return False


def _values_of(schema: Any) -> list[Any] | None:
    if not isinstance(schema, dict):
        return None
    if "const" in schema:
        return [schema["const"]]
    enum = schema.get("enum")
    return enum if isinstance(enum, list) else None


def _only_types(schema: Schema) -> bool:
    return set(schema) - _ANNOTATIONS <= {"type"}


def _merge(parts: list[Any]) -> Schema | None:
    """The branches of a writer's ``allOf`` as one schema, when their keywords do not clash.

    The merge accepts at least what the ``allOf`` accepts (keywords such as
    ``additionalProperties`` only get more permissive next to more ``properties``), so reading
    it is enough to read the ``allOf``.
    """
    merged: Schema = {}
    for part in parts:
        if not isinstance(part, dict) or any(_merge_blocked(k, part) for k in part):
            return None
        for key, value in part.items():
            combined = _combine(key, merged.get(key), value)
            if combined is _CLASH:
                return None
            merged[key] = combined
    return merged


_CLASH = object()


def _merge_blocked(key: str, part: Schema) -> bool:
    return key in _SPREAD and not all(k in part for k in ("contains",) if key.endswith("Contains"))


def _combine(key: str, old: Any, new: Any) -> Any:
    if old is None or old == new:
        return new
    if key == "properties" and isinstance(old, dict) and isinstance(new, dict):
        if any(name in old and old[name] != new[name] for name in new):
            return _CLASH
        return {**old, **new}
    if key == "required" and isinstance(old, list) and isinstance(new, list):
        return sorted(set(old) | set(new))
    if key == "type":
        both = _type_intersection(old, new)
        return both if both else _CLASH
    return _CLASH


def _type_intersection(old: Any, new: Any) -> list[str]:
    first = json_rules.type_set({"type": old}) or set()
    second = json_rules.type_set({"type": new}) or set()
    return sorted(first & second)
