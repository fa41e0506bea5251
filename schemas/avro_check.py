"""A fast Avro datum checker compiled from a fastavro-parsed schema.

fastavro's writer refuses most data that does not match its schema, but accepts some that
does not (a ``bool``, a ``1.5`` or a string ``"1.5"`` for a number, an ``int`` too large for
32 bits, anything truthy for a boolean), and its validator is several times slower than the
writer itself. :func:`compile_check` builds, once per schema, a tree of small closures that
checks exactly those holes (and everything inside unions, where the branch matters) and names
the offending field (``shop.Order.amount``); the writer checks the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from schemas.errors import SchemaValidationError

__all__ = ["Check", "compile_check"]

Check = Callable[[Any, str], None]
_WRITER_SAFE = frozenset(("null", "bytes", "string"))
_INT, _LONG = 2**31, 2**63


def _fail(path: str, value: Any, expected: str) -> None:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    error = SchemaValidationError(f"field {path or '<root>'!r}: {shown} is not a valid {expected}")
    error.field = path
    raise error


def _null(v: Any, p: str) -> None:
    if v is not None:
        _fail(p, v, "null")


def _boolean(v: Any, p: str) -> None:
    if type(v) is not bool:
        _fail(p, v, "boolean")


def _int(v: Any, p: str) -> None:
    if type(v) is not int or not -_INT <= v < _INT:
        _fail(p, v, "int (32-bit)")


def _long(v: Any, p: str) -> None:
    if type(v) is not int or not -_LONG <= v < _LONG:
        _fail(p, v, "long (64-bit)")


def _number(v: Any, p: str) -> None:
    if type(v) is not float and type(v) is not int:
        _fail(p, v, "float or double")


def _bytes(v: Any, p: str) -> None:
    if not isinstance(v, bytes | bytearray | memoryview):
        _fail(p, v, "bytes")


def _string(v: Any, p: str) -> None:
    if not isinstance(v, str):
        _fail(p, v, "string")


_PREDICATES: dict[str, Callable[[Any], bool]] = {
    "null": lambda v: v is None,
    "boolean": lambda v: type(v) is bool,
    "int": lambda v: type(v) is int and -_INT <= v < _INT,
    "long": lambda v: type(v) is int and -_LONG <= v < _LONG,
    "float": lambda v: type(v) is float or type(v) is int,
    "double": lambda v: type(v) is float or type(v) is int,
    "bytes": lambda v: isinstance(v, bytes | bytearray | memoryview),
    "string": lambda v: isinstance(v, str),
}

_PRIMITIVES: dict[str, Check] = {
    "null": _null,
    "boolean": _boolean,
    "int": _int,
    "long": _long,
    "float": _number,
    "double": _number,
    "bytes": _bytes,
    "string": _string,
}


def _anything(v: Any, p: str) -> None:
    """Logical types: the writer knows which Python types it accepts."""


def _record_check(name: str, fields: list[tuple[str, Check, bool]], *, strict: bool) -> Check:
    def record(v: Any, p: str) -> None:
        if not isinstance(v, dict) and not isinstance(v, Mapping):
            if strict:
                _fail(p, v, f"record {name}")
            return  # the writer refuses it with its own message
        for field, check, has_default in fields:
            if field in v:
                check(v[field], f"{name}.{field}")
            elif strict and not has_default:
                _fail(f"{name}.{field}", None, "value: the field is required")

    return record


class _Compiler:
    """Builds strict checks (whole datum) and lenient ones (only the writer's holes)."""

    def __init__(self, named: Mapping[str, Any]) -> None:
        self.named = named
        self.cache: dict[tuple[str, bool], Check | None] = {}

    def lenient(self, schema: Any) -> Check | None:
        """A check for what the writer would let through, or None when it lets nothing."""
        if isinstance(schema, list):
            safe = all(isinstance(b, str) and b in _WRITER_SAFE for b in schema)
            return None if safe else self._union(schema)
        if isinstance(schema, str):
            return None if schema in _WRITER_SAFE else self._named(schema, strict=False)
        kind = schema.get("type")
        if schema.get("logicalType") or kind in ("enum", "fixed") or kind in _WRITER_SAFE:
            return None
        if kind in ("record", "error"):
            return self._record(schema, strict=False)
        if kind == "array":
            item = self.lenient(schema["items"])
            return None if item is None else self._array(item)
        if kind == "map":
            values = self.lenient(schema["values"])
            return None if values is None else self._map(values)
        return self.lenient(kind)

    def strict(self, schema: Any) -> Check:
        """A strict check of the whole datum."""
        if isinstance(schema, list):
            return self._union(schema)
        if isinstance(schema, str):
            check = self._named(schema, strict=True)
            assert check is not None
            return check
        kind = schema.get("type")
        if schema.get("logicalType"):
            return _anything
        if kind in ("record", "error"):
            check = self._record(schema, strict=True)
            assert check is not None
            return check
        builders: dict[str, Callable[[dict[str, Any]], Check]] = {
            "enum": _enum,
            "fixed": _fixed,
            "array": lambda s: self._array(self.strict(s["items"])),
            "map": lambda s: self._map(self.strict(s["values"])),
        }
        builder = builders.get(kind) if isinstance(kind, str) else None
        return builder(schema) if builder is not None else self.strict(kind)

    def _named(self, name: str, *, strict: bool) -> Check | None:
        if name not in self.named:
            primitive: Check = _PRIMITIVES.get(name, _anything)
            return primitive
        schema = self.named[name]
        if schema.get("type") in ("record", "error"):
            return self._record(schema, strict=strict)
        return self.strict(schema) if strict else self.lenient(schema)

    def _record(self, schema: dict[str, Any], *, strict: bool) -> Check | None:
        key = (schema["name"], strict)
        if key in self.cache:
            return self.cache[key]
        slot: list[Check | None] = [None]

        def late(v: Any, p: str) -> None:  # recursion: bound once the record is built
            check = slot[0]
            if check is not None:
                check(v, p)

        self.cache[key] = late
        compile_field = self.strict if strict else self.lenient
        fields = [
            (f["name"], check, "default" in f)
            for f in schema["fields"]
            if (check := compile_field(f["type"])) is not None
        ]
        built = _record_check(schema["name"], fields, strict=strict) if fields or strict else None
        slot[0] = self.cache[key] = built
        return built

    def _union(self, branches: list[Any]) -> Check:
        primitive = [b for b in branches if isinstance(b, str) and b in _PREDICATES]
        predicates = tuple(_PREDICATES[b] for b in primitive)
        checks = [self.strict(branch) for branch in branches if branch not in primitive]
        names = [b if isinstance(b, str) else b.get("name", b.get("type")) for b in branches]

        def union(v: Any, p: str) -> None:
            for accepts in predicates:  # cheap tests first, no exceptions on the hot path
                if accepts(v):
                    return
            if isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str):
                return  # fastavro's (name, value) notation; the writer checks it
            deeper: list[SchemaValidationError] = []
            for check in checks:
                try:
                    check(v, p)
                except SchemaValidationError as exc:
                    if exc.field != p:  # the branch matched in kind and failed inside
                        deeper.append(exc)
                    continue
                return
            if deeper:
                raise deeper[0]
            _fail(p, v, f"union branch of {names}")

        return union

    @staticmethod
    def _array(item: Check) -> Check:
        def array(v: Any, p: str) -> None:
            if not isinstance(v, list | tuple):
                return _fail(p, v, "array")
            for index, element in enumerate(v):
                item(element, f"{p}[{index}]")
            return None

        return array

    @staticmethod
    def _map(values: Check) -> Check:
        def mapping(v: Any, p: str) -> None:
            if not isinstance(v, Mapping):
                return _fail(p, v, "map")
            for key, element in v.items():
                values(element, f"{p}[{key!r}]")
            return None

        return mapping


def _enum(schema: dict[str, Any]) -> Check:
    symbols = frozenset(schema["symbols"])

    def enum(v: Any, p: str) -> None:
        if not isinstance(v, str) or v not in symbols:
            _fail(p, v, f"symbol of {schema['name']} {sorted(symbols)}")

    return enum


def _fixed(schema: dict[str, Any]) -> Check:
    size = schema["size"]

    def fixed(v: Any, p: str) -> None:
        if not isinstance(v, bytes | bytearray) or len(v) != size:
            _fail(p, v, f"fixed of {size} bytes")

    return fixed


def compile_check(parsed: Any) -> Check:
    """A checker for data of a fastavro-parsed schema (references included)."""
    named = parsed.get("__named_schemas", {}) if isinstance(parsed, dict) else {}
    check = _Compiler(named).lenient(parsed)
    return check if check is not None else _anything
