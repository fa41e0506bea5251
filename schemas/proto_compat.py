"""Protobuf compatibility over descriptors, with Confluent's rules.

:func:`differences` compares the file an old schema compiled to (the writer) with a new one's
(the reader) and lists every change with Confluent's name for it; :func:`incompatibilities`
keeps the ones that break readers. The rules (Confluent's documented Protobuf rules, see
docs/registry.md):

- fields are matched by **number**, never by name: renaming a field is compatible, a new number
  is a removal plus an addition; adding and removing optional fields is compatible, adding or
  removing a proto2 ``required`` field is not;
- a field's type may change only within a wire-compatible group: ``int32 int64 uint32 uint64
  bool`` and enums; ``sint32 sint64``; ``string bytes``; ``fixed32 sfixed32``; ``fixed64
  sfixed64``; ``float``; ``double``. Scalar, message and map kinds never change into each other;
  a message field keeps its type's name (without the package) and that type must itself stay
  compatible; map keys and values follow the same rules;
- a numeric field does not change between singular and ``repeated`` (string and bytes may);
- a oneof may be added or removed whole; a field may be added to a oneof or moved out of one,
  but not removed from a oneof that stays, and fields that were independent must not become
  members of one oneof;
- messages may be added and reordered but not removed (a map's entry type aside); enums and
  enum constants may be added, renamed and removed;
- the package must not change.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from schemas.proto_schema import CompiledProto

if TYPE_CHECKING:
    from google.protobuf.descriptor_pb2 import (
        DescriptorProto,
        EnumDescriptorProto,
        FieldDescriptorProto,
        FileDescriptorProto,
    )

__all__ = ["COMPATIBLE", "Change", "differences", "incompatibilities"]

COMPATIBLE = frozenset(
    (
        "MESSAGE_ADDED",
        "MESSAGE_MOVED",
        "ENUM_ADDED",
        "ENUM_REMOVED",
        "ENUM_CONST_ADDED",
        "ENUM_CONST_CHANGED",
        "ENUM_CONST_REMOVED",
        "FIELD_ADDED",
        "FIELD_REMOVED",
        "FIELD_NAME_CHANGED",
        "FIELD_STRING_OR_BYTES_LABEL_CHANGED",
        "ONEOF_ADDED",
        "ONEOF_REMOVED",
        "ONEOF_FIELD_ADDED",
        "ONEOF_FIELD_MOVED_TO_TOP_LEVEL",
    )
)
_DESCRIPTIONS = {
    "PACKAGE_CHANGED": "the package changed",
    "MESSAGE_REMOVED": "the message was removed",
    "FIELD_KIND_CHANGED": "the field changed between scalar, message and map",
    "FIELD_SCALAR_KIND_CHANGED": "the field's type changed outside its wire-compatible group",
    "FIELD_NAMED_TYPE_CHANGED": "the field's message type changed",
    "FIELD_NUMERIC_LABEL_CHANGED": "the numeric field changed between singular and repeated",
    "REQUIRED_FIELD_ADDED": "a required field was added",
    "REQUIRED_FIELD_REMOVED": "a required field was removed",
    "ONEOF_FIELD_REMOVED": "a field was removed from a oneof that stays",
    "MULTIPLE_FIELDS_MOVED_TO_ONEOF": "several independent fields were moved into one oneof",
    "FIELD_MOVED_TO_EXISTING_ONEOF": "an independent field was moved into an existing oneof",
}
# Wire-compatible scalar groups (the protobuf language guide's "Updating a message type").
_GROUPS = {
    "INT32": "number",
    "INT64": "number",
    "UINT32": "number",
    "UINT64": "number",
    "BOOL": "number",
    "ENUM": "number",
    "SINT32": "signed",
    "SINT64": "signed",
    "STRING": "text",
    "BYTES": "text",
    "FIXED32": "fixed32",
    "SFIXED32": "fixed32",
    "FIXED64": "fixed64",
    "SFIXED64": "fixed64",
    "FLOAT": "float",
    "DOUBLE": "double",
}


@dataclasses.dataclass(frozen=True, slots=True)
class Change:
    """One difference between two schemas: Confluent's type name and where it is."""

    kind: str
    path: str

    @property
    def compatible(self) -> bool:
        """Whether readers of the new schema still read data of the old one."""
        return self.kind in COMPATIBLE

    def __str__(self) -> str:
        what = _DESCRIPTIONS.get(self.kind, self.kind.lower().replace("_", " "))
        return f"{{errorType:'{self.kind}', description:'{what} at {self.path}'}}"


def incompatibilities(reader: CompiledProto, writer: CompiledProto) -> list[str]:
    """Why a reader of ``reader`` cannot read what ``writer`` wrote (empty when it can)."""
    found = [str(c) for c in differences(writer, reader) if not c.compatible]
    return list(dict.fromkeys(found))


def differences(original: CompiledProto, update: CompiledProto) -> list[Change]:
    """Every change from ``original`` (the writer's schema) to ``update`` (the reader's)."""
    walker = _Walker(_Types(original), _Types(update))
    return list(walker.file(original.file, update.file))


class _Types:
    """Every message and enum a compiled schema can name, by full name (``.pkg.Name``)."""

    def __init__(self, compiled: CompiledProto) -> None:
        self.messages: dict[str, tuple[DescriptorProto, str]] = {}
        self.enums: set[str] = set()
        for file in (*compiled.dependencies, compiled.file):
            scope = f".{file.package}" if file.package else ""
            self._add(file.message_type, file.enum_type, scope, file.package)

    def _add(
        self,
        messages: Sequence[DescriptorProto],
        enums: Sequence[EnumDescriptorProto],
        scope: str,
        package: str,
    ) -> None:
        self.enums.update(f"{scope}.{enum.name}" for enum in enums)
        for message in messages:
            full = f"{scope}.{message.name}"
            self.messages[full] = (message, package)
            self._add(message.nested_type, message.enum_type, full, package)

    def local_name(self, full: str) -> str:
        """The type's name without its file's package."""
        package = self.messages[full][1]
        return full[len(package) + 2 :] if package else full.lstrip(".")


def _oneof_of(message: DescriptorProto, field: FieldDescriptorProto) -> str | None:
    if not field.HasField("oneof_index") or field.proto3_optional:
        return None
    return str(message.oneof_decl[field.oneof_index].name)


def _label(field: FieldDescriptorProto) -> str:
    return "repeated" if field.label == field.LABEL_REPEATED else "single"


def _required(field: FieldDescriptorProto) -> bool:
    return bool(field.label == field.LABEL_REQUIRED)


class _Walker:
    def __init__(self, original: _Types, update: _Types) -> None:
        self.original, self.update = original, update
        self._visiting: set[tuple[str, str]] = set()

    def file(self, original: FileDescriptorProto, update: FileDescriptorProto) -> Iterator[Change]:
        if original.package != update.package:
            yield Change("PACKAGE_CHANGED", "#/")
        o_scope = f".{original.package}" if original.package else ""
        u_scope = f".{update.package}" if update.package else ""
        yield from self.types(original, update, (o_scope, u_scope), "#")

    def types(
        self,
        original: FileDescriptorProto | DescriptorProto,
        update: FileDescriptorProto | DescriptorProto,
        scopes: tuple[str, str],
        path: str,
    ) -> Iterator[Change]:
        o_types = original.message_type if _is_file(original) else original.nested_type  # type: ignore[union-attr]
        u_types = update.message_type if _is_file(update) else update.nested_type  # type: ignore[union-attr]
        o_index = {m.name: (i, m) for i, m in enumerate(o_types)}
        u_index = {m.name: (i, m) for i, m in enumerate(u_types)}
        for name in sorted(o_index.keys() | u_index.keys()):
            where = f"{path}/{name}"
            if name not in u_index:
                if not o_index[name][1].options.map_entry:
                    yield Change("MESSAGE_REMOVED", where)
            elif name not in o_index:
                yield Change("MESSAGE_ADDED", where)
            else:
                full = (f"{scopes[0]}.{name}", f"{scopes[1]}.{name}")
                yield from self.message(o_index[name][1], u_index[name][1], full, where)
                if o_index[name][0] != u_index[name][0]:
                    yield Change("MESSAGE_MOVED", where)
        yield from _enums(original.enum_type, update.enum_type, path)

    def message(
        self,
        original: DescriptorProto,
        update: DescriptorProto,
        names: tuple[str, str],
        path: str,
    ) -> Iterator[Change]:
        if names in self._visiting:
            return
        self._visiting.add(names)
        try:
            yield from self._fields(original, update, path)
            yield from self.types(original, update, names, path)
        finally:
            self._visiting.discard(names)

    def _fields(
        self, original: DescriptorProto, update: DescriptorProto, path: str
    ) -> Iterator[Change]:
        o_fields = {f.number: f for f in original.field}
        u_fields = {f.number: f for f in update.field}
        o_oneofs = {n: _oneof_of(original, f) for n, f in o_fields.items()}
        u_oneofs = {n: _oneof_of(update, f) for n, f in u_fields.items()}
        yield from _oneof_membership(o_oneofs, u_oneofs, path)
        dropped = _dropped_oneofs(o_oneofs, u_fields, u_oneofs)
        for number in sorted(o_fields.keys() | u_fields.keys()):
            o_oneof, u_oneof = o_oneofs.get(number), u_oneofs.get(number)
            where = f"{path}/{u_oneof or o_oneof}/{number}" if (u_oneof or o_oneof) else ""
            where = where or f"{path}/{number}"
            if number not in u_fields:
                if o_oneof is not None:
                    if o_oneof not in dropped:
                        yield Change("ONEOF_FIELD_REMOVED", where)
                elif _required(o_fields[number]):
                    yield Change("REQUIRED_FIELD_REMOVED", where)
                else:
                    yield Change("FIELD_REMOVED", where)
            elif number not in o_fields:
                kind = "ONEOF_FIELD_ADDED" if u_oneof is not None else "FIELD_ADDED"
                if u_oneof is None and _required(u_fields[number]):
                    kind = "REQUIRED_FIELD_ADDED"
                yield Change(kind, where)
            else:
                if o_oneof is not None and u_oneof is None:
                    yield Change("ONEOF_FIELD_MOVED_TO_TOP_LEVEL", where)
                yield from self.field(o_fields[number], u_fields[number], where)

    def field(
        self, original: FieldDescriptorProto, update: FieldDescriptorProto, path: str
    ) -> Iterator[Change]:
        if original.name != update.name:
            yield Change("FIELD_NAME_CHANGED", path)
        yield from self._typed(original, update, path, labels=True)

    def _kind(self, field: FieldDescriptorProto, types: _Types) -> str:
        if field.type == field.TYPE_ENUM:
            return "scalar"
        if field.type not in (field.TYPE_MESSAGE, field.TYPE_GROUP):
            return "scalar"
        entry = types.messages.get(field.type_name)
        return "map" if entry is not None and entry[0].options.map_entry else "message"

    def _typed(
        self,
        original: FieldDescriptorProto,
        update: FieldDescriptorProto,
        path: str,
        *,
        labels: bool,
    ) -> Iterator[Change]:
        o_kind, u_kind = self._kind(original, self.original), self._kind(update, self.update)
        if o_kind != u_kind:
            yield Change("FIELD_KIND_CHANGED", path)
        elif o_kind == "scalar":
            yield from _scalar(original, update, path, labels=labels)
        elif o_kind == "map":
            o_entry = self.original.messages[original.type_name][0]
            u_entry = self.update.messages[update.type_name][0]
            for o_part, u_part in zip(o_entry.field, u_entry.field, strict=False):
                yield from self._typed(o_part, u_part, path, labels=False)
        else:
            yield from self._named(original.type_name, update.type_name, path)

    def _named(self, original: str, update: str, path: str) -> Iterator[Change]:
        if original not in self.original.messages or update not in self.update.messages:
            if original.rsplit(".", 1)[-1] != update.rsplit(".", 1)[-1]:
                yield Change("FIELD_NAMED_TYPE_CHANGED", path)
            return
        if self.original.local_name(original) != self.update.local_name(update):
            yield Change("FIELD_NAMED_TYPE_CHANGED", path)
            return
        inner = list(
            self.message(
                self.original.messages[original][0],
                self.update.messages[update][0],
                (original, update),
                f"#/{self.update.local_name(update).replace('.', '/')}",
            )
        )
        yield from inner
        if any(not change.compatible for change in inner):
            yield Change("FIELD_NAMED_TYPE_CHANGED", path)


def _is_file(node: object) -> bool:
    return hasattr(node, "message_type")


def _scalar(
    original: FieldDescriptorProto, update: FieldDescriptorProto, path: str, *, labels: bool
) -> Iterator[Change]:
    o_group = _GROUPS[original.Type.Name(original.type).removeprefix("TYPE_")]
    u_group = _GROUPS[update.Type.Name(update.type).removeprefix("TYPE_")]
    if o_group != u_group:
        yield Change("FIELD_SCALAR_KIND_CHANGED", path)
    elif labels and _label(original) != _label(update):
        text = o_group == "text"
        yield Change(
            "FIELD_STRING_OR_BYTES_LABEL_CHANGED" if text else "FIELD_NUMERIC_LABEL_CHANGED", path
        )


def _oneof_membership(
    original: dict[int, str | None],
    update: dict[int, str | None],
    path: str,
) -> Iterator[Change]:
    """Fields that were independent before must not become exclusive now."""
    members: dict[str, list[int]] = {}
    for number, oneof in update.items():
        if oneof is not None:
            members.setdefault(oneof, []).append(number)
    for oneof, numbers in sorted(members.items()):
        old = [n for n in numbers if n in original]
        groups = {f"oneof:{original[n]}" if original[n] else f"field:{n}" for n in old}
        if len(groups) > 1:
            moved_in = sum(1 for n in old if original[n] is None)
            kind = (
                "MULTIPLE_FIELDS_MOVED_TO_ONEOF"
                if moved_in > 1
                else "FIELD_MOVED_TO_EXISTING_ONEOF"
            )
            yield Change(kind, f"{path}/{oneof}")
    for oneof in sorted({o for o in original.values() if o} ^ {o for o in update.values() if o}):
        in_update = oneof in {o for o in update.values() if o}
        yield Change("ONEOF_ADDED" if in_update else "ONEOF_REMOVED", f"{path}/{oneof}")


def _dropped_oneofs(
    original: dict[int, str | None],
    u_fields: dict[int, FieldDescriptorProto],
    update: dict[int, str | None],
) -> set[str]:
    """Oneofs removed whole: gone by name and none of their members left anywhere."""
    remaining = {o for o in update.values() if o}
    dropped = {o for o in original.values() if o and o not in remaining}
    return {o for o in dropped if not any(original[n] == o for n in u_fields)}


def _enums(
    original: Sequence[EnumDescriptorProto], update: Sequence[EnumDescriptorProto], path: str
) -> Iterator[Change]:
    o_enums, u_enums = {e.name: e for e in original}, {e.name: e for e in update}
    for name in sorted(o_enums.keys() | u_enums.keys()):
        where = f"{path}/{name}"
        if name not in u_enums:
            yield Change("ENUM_REMOVED", where)
        elif name not in o_enums:
            yield Change("ENUM_ADDED", where)
        else:
            o_values = {v.number: v.name for v in o_enums[name].value}
            u_values = {v.number: v.name for v in u_enums[name].value}
            for number in sorted(o_values.keys() | u_values.keys()):
                if number not in u_values:
                    yield Change("ENUM_CONST_REMOVED", f"{where}/{number}")
                elif number not in o_values:
                    yield Change("ENUM_CONST_ADDED", f"{where}/{number}")
                elif o_values[number] != u_values[number]:
                    yield Change("ENUM_CONST_CHANGED", f"{where}/{number}")
