"""The registry's vocabulary: schema types, compatibility levels, modes and schemas."""

from __future__ import annotations

import dataclasses
import json
from enum import StrEnum
from typing import Any

from schemas.errors import InvalidCompatibilityError, InvalidModeError, InvalidSchemaError

__all__ = [
    "Compatibility",
    "CompatibilityResult",
    "Mode",
    "Reference",
    "RegisteredSchema",
    "Schema",
    "SchemaType",
]


class SchemaType(StrEnum):
    """The schema languages the registry understands."""

    AVRO = "AVRO"
    JSON = "JSON"
    PROTOBUF = "PROTOBUF"

    @classmethod
    def parse(cls, text: str | None) -> SchemaType:
        """``avro``/``AVRO``/``None`` (Confluent's default), ``json`` or ``protobuf``."""
        if text is None or text == "":
            return cls.AVRO
        try:
            return cls(text.upper())
        except ValueError:
            names = ", ".join(member.value for member in cls)
            raise InvalidSchemaError(
                f"schema type {text!r} is not supported; use one of {names}"
            ) from None


class Compatibility(StrEnum):
    """Confluent's seven compatibility levels."""

    NONE = "NONE"
    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"

    @classmethod
    def parse(cls, text: str) -> Compatibility:
        """A level from its name, case-insensitively."""
        try:
            return cls(str(text).upper())
        except ValueError:
            names = ", ".join(member.value for member in cls)
            raise InvalidCompatibilityError(
                f"invalid compatibility level {text!r}; use one of {names}"
            ) from None

    @property
    def transitive(self) -> bool:
        """Whether new schemas are checked against every version, not only the latest."""
        return self.value.endswith("_TRANSITIVE")

    @property
    def backward(self) -> bool:
        """Whether the new schema must read data written with the old ones."""
        return self.value.startswith(("BACKWARD", "FULL"))

    @property
    def forward(self) -> bool:
        """Whether the old schemas must read data written with the new one."""
        return self.value.startswith(("FORWARD", "FULL"))


class Mode(StrEnum):
    """What a subject (or the whole registry) accepts."""

    READWRITE = "READWRITE"
    READONLY = "READONLY"
    READONLY_OVERRIDE = "READONLY_OVERRIDE"
    IMPORT = "IMPORT"

    @classmethod
    def parse(cls, text: str) -> Mode:
        """A mode from its name, case-insensitively."""
        try:
            return cls(str(text).upper())
        except ValueError:
            names = ", ".join(member.value for member in cls)
            raise InvalidModeError(f"invalid mode {text!r}; use one of {names}") from None

    @property
    def read_only(self) -> bool:
        """Whether the mode refuses registrations, deletes and config changes."""
        return self in (Mode.READONLY, Mode.READONLY_OVERRIDE)


@dataclasses.dataclass(frozen=True, slots=True)
class Reference:
    """A named reference from one schema to a version of another subject."""

    name: str
    subject: str
    version: int

    def to_dict(self) -> dict[str, Any]:
        """Confluent's JSON form."""
        return {"name": self.name, "subject": self.subject, "version": self.version}

    @classmethod
    def from_dict(cls, raw: Any) -> Reference:
        """Read Confluent's JSON form, refusing malformed references."""
        if not isinstance(raw, dict):
            raise InvalidSchemaError(f"a reference must be an object, got {raw!r}")
        name, subject, version = raw.get("name"), raw.get("subject"), raw.get("version")
        if not isinstance(name, str) or not isinstance(subject, str):
            raise InvalidSchemaError(f"a reference needs string 'name' and 'subject': {raw!r}")
        if isinstance(version, bool) or not isinstance(version, int):
            raise InvalidSchemaError(f"a reference needs an integer 'version': {raw!r}")
        return cls(name=name, subject=subject, version=version)


@dataclasses.dataclass(frozen=True, slots=True)
class Schema:
    """A schema as given: its text, its type and the references it uses."""

    text: str
    type: SchemaType = SchemaType.AVRO
    references: tuple[Reference, ...] = ()

    def parsed(self) -> Any:
        """The schema text as JSON (Avro and JSON Schema; a Protobuf schema is not JSON)."""
        try:
            return json.loads(self.text)
        except ValueError as exc:
            raise InvalidSchemaError(f"the {self.type} schema is not valid JSON: {exc}") from exc

    def identity(self, body: str | None = None) -> str:
        """The key under which equal schemas share one id: compact JSON with sorted keys.

        Whitespace and key order do not make a new schema; field order, defaults and docs do
        (they change what the schema means or says), so this is stricter than Avro's Parsing
        Canonical Form, which would merge schemas that differ in defaults. A Protobuf schema's
        text is its own body here; the registry passes the compiled descriptor as ``body``.
        """
        refs = ",".join(f"{r.name}={r.subject}:{r.version}" for r in self.references)
        if body is None:
            body = (
                self.text
                if self.type is SchemaType.PROTOBUF
                else json.dumps(self.parsed(), sort_keys=True, separators=(",", ":"))
            )
        return f"{self.type}|{refs}|{body}"

    def to_dict(self) -> dict[str, Any]:
        """Confluent's request/response JSON (``schemaType`` omitted for Avro, as Confluent)."""
        out: dict[str, Any] = {"schema": self.text}
        if self.type is not SchemaType.AVRO:
            out["schemaType"] = self.type.value
        if self.references:
            out["references"] = [ref.to_dict() for ref in self.references]
        return out


@dataclasses.dataclass(frozen=True, slots=True)
class RegisteredSchema:
    """A schema registered under a subject: the subject, its version and the global id."""

    subject: str
    version: int
    id: int
    schema: Schema
    deleted: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Confluent's ``GET /subjects/{s}/versions/{v}`` JSON."""
        return {
            "subject": self.subject,
            "version": self.version,
            "id": self.id,
            **self.schema.to_dict(),
        }


@dataclasses.dataclass(frozen=True, slots=True)
class CompatibilityResult:
    """A compatibility verdict and, when incompatible, the reasons."""

    is_compatible: bool
    messages: tuple[str, ...] = ()

    def to_dict(self, *, verbose: bool = False) -> dict[str, Any]:
        """Confluent's ``POST /compatibility/...`` JSON."""
        out: dict[str, Any] = {"is_compatible": self.is_compatible}
        if verbose:
            out["messages"] = list(self.messages)
        return out
