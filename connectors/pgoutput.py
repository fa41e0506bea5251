"""A decoder for the PostgreSQL ``pgoutput`` logical replication messages a relay needs.

Protocol version 1 (PostgreSQL 10+), see "Logical Replication Message Formats" in the
PostgreSQL manual. Decoded: Begin, Commit, Relation, Insert, with text and binary tuple data
(``binary 'true'`` option, PostgreSQL 14+). Recognised and skipped: Update, Delete, Truncate,
Origin, Type, logical decoding Message. Anything else raises :class:`PgOutputError`.

Values are turned into Python for the column types of an outbox table (uuid, text/varchar,
json/jsonb, bytea, timestamp[tz], integers, boolean); other types stay ``str`` (text) or
``bytes`` (binary).
"""

from __future__ import annotations

import dataclasses
import struct
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "Begin",
    "Column",
    "Commit",
    "Insert",
    "PgOutputError",
    "Relation",
    "Skipped",
    "decode_message",
    "format_lsn",
    "parse_lsn",
    "to_python",
]

PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

# type oids (pg_type.dat)
BOOL, BYTEA, INT8, INT2, INT4, TEXT, JSON = 16, 17, 20, 21, 23, 25, 114
VARCHAR, BPCHAR, TIMESTAMP, TIMESTAMPTZ, UUID, JSONB = 1043, 1042, 1114, 1184, 2950, 3802
_TEXTUAL = frozenset((TEXT, VARCHAR, BPCHAR, JSON))
_INTEGERS = {INT2: ">h", INT4: ">i", INT8: ">q"}


class PgOutputError(ValueError):
    """Bytes that are not a pgoutput message this decoder knows."""


@dataclasses.dataclass(frozen=True, slots=True)
class Begin:
    final_lsn: int
    commit_time: datetime
    xid: int


@dataclasses.dataclass(frozen=True, slots=True)
class Commit:
    flags: int
    commit_lsn: int
    end_lsn: int
    commit_time: datetime


@dataclasses.dataclass(frozen=True, slots=True)
class Column:
    flags: int
    name: str
    type_oid: int
    type_modifier: int


@dataclasses.dataclass(frozen=True, slots=True)
class Relation:
    oid: int
    namespace: str
    name: str
    replica_identity: str
    columns: tuple[Column, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Insert:
    """An inserted row: per column ``(kind, raw)``, kind ``t`` text, ``b`` binary, ``n`` null."""

    relation_oid: int
    values: tuple[tuple[str, bytes | None], ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Skipped:
    """A message the relay does not need (Update, Delete, Truncate, Origin, Type, Message)."""

    kind: str


Message = Begin | Commit | Relation | Insert | Skipped


def parse_lsn(text: str) -> int:
    """``'16/B374D848'`` -> integer LSN."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


def format_lsn(lsn: int) -> str:
    """Integer LSN -> ``'16/B374D848'``."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise PgOutputError(f"pgoutput message truncated at byte {self.pos}")
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return value

    def string(self) -> str:
        end = self.buf.find(b"\0", self.pos)
        if end < 0:
            raise PgOutputError("pgoutput string is not NUL-terminated")
        text = self.buf[self.pos : end].decode()
        self.pos = end + 1
        return text

    def raw(self, size: int) -> bytes:
        if self.pos + size > len(self.buf):
            raise PgOutputError(f"pgoutput value truncated at byte {self.pos}")
        chunk = self.buf[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def time(self) -> datetime:
        return PG_EPOCH + timedelta(microseconds=self.take(">q"))


def _tuple(reader: _Reader) -> tuple[tuple[str, bytes | None], ...]:
    count = reader.take(">H")
    values: list[tuple[str, bytes | None]] = []
    for _ in range(count):
        kind = chr(reader.take("B"))
        if kind in ("n", "u"):
            values.append((kind, None))
        elif kind in ("t", "b"):
            values.append((kind, reader.raw(reader.take(">I"))))
        else:
            raise PgOutputError(f"unknown pgoutput tuple column kind {kind!r}")
    return tuple(values)


def _relation(reader: _Reader) -> Relation:
    oid = reader.take(">I")
    namespace = reader.string()
    name = reader.string()
    identity = chr(reader.take("B"))
    columns = tuple(
        Column(reader.take("B"), reader.string(), reader.take(">I"), reader.take(">i"))
        for _ in range(reader.take(">H"))
    )
    return Relation(oid, namespace, name, identity, columns)


_SKIPPED = {
    "U": "update",
    "D": "delete",
    "T": "truncate",
    "O": "origin",
    "Y": "type",
    "M": "message",
}


def decode_message(payload: bytes) -> Message:
    """Decode one pgoutput message (the payload of one XLogData)."""
    if not payload:
        raise PgOutputError("empty pgoutput message")
    reader = _Reader(bytes(payload))
    kind = chr(reader.take("B"))
    if kind == "B":
        return Begin(reader.take(">Q"), reader.time(), reader.take(">I"))
    if kind == "C":
        return Commit(reader.take("B"), reader.take(">Q"), reader.take(">Q"), reader.time())
    if kind == "R":
        return _relation(reader)
    if kind == "I":
        oid = reader.take(">I")
        marker = chr(reader.take("B"))
        if marker != "N":
            raise PgOutputError(f"pgoutput Insert without a new tuple (marker {marker!r})")
        return Insert(oid, _tuple(reader))
    if kind in _SKIPPED:
        return Skipped(_SKIPPED[kind])
    raise PgOutputError(f"unknown pgoutput message type {kind!r}")


def to_python(kind: str, raw: bytes | None, type_oid: int) -> Any:
    """One tuple value as Python, for the column's type oid."""
    if raw is None:
        return None
    if kind == "b":
        return _from_binary(raw, type_oid)
    return _from_text(raw.decode(), type_oid)


def _from_text(text: str, type_oid: int) -> Any:
    if type_oid == BYTEA:
        return bytes.fromhex(text[2:]) if text.startswith("\\x") else text.encode()
    if type_oid in (TIMESTAMPTZ, TIMESTAMP):
        moment = datetime.fromisoformat(text)
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if type_oid in _INTEGERS:
        return int(text)
    if type_oid == BOOL:
        return text == "t"
    return text


def _from_binary(raw: bytes, type_oid: int) -> Any:
    if type_oid == UUID:
        return str(uuid.UUID(bytes=raw))
    if type_oid in _TEXTUAL:
        return raw.decode()
    if type_oid == JSONB:
        if not raw or raw[0] != 1:
            raise PgOutputError("unsupported binary jsonb version")
        return raw[1:].decode()
    if type_oid in (TIMESTAMPTZ, TIMESTAMP):
        return PG_EPOCH + timedelta(microseconds=struct.unpack(">q", raw)[0])
    if type_oid in _INTEGERS:
        return struct.unpack(_INTEGERS[type_oid], raw)[0]
    if type_oid == BOOL:
        return raw != b"\x00"
    return raw
