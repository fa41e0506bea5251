"""``choreo schema register|ls|show|check|config``: parse, call the registry client, render."""

from __future__ import annotations

import json
import re
import shlex
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from choreo.commands.options import Output, OutputChoiceOption
from choreo.config import check_url, existing
from choreo.console import fail, out_console, print_json, run
from choreo.errors import EXIT_FAILURE, EXIT_USAGE
from schemas.client import RegistryClient
from schemas.errors import IncompatibleSchemaError, RegistryError, VersionNotFoundError
from schemas.model import Compatibility, Reference, Schema, SchemaType
from schemas.storage import DEFAULT_STORAGE_URL

__all__ = ["schema_app"]

schema_app = typer.Typer(
    help="Register, inspect and check schemas in the schema registry.", no_args_is_help=True
)


class TypeChoice(StrEnum):
    """Schema types on the command line."""

    avro = "avro"
    json = "json"
    protobuf = "protobuf"


REGISTRY = typer.Option(
    None,
    "--registry",
    envvar="CHOREO_REGISTRY_URL",
    help=f"Registry URL: http://host:8081, or embedded storage (default {DEFAULT_STORAGE_URL}).",
    show_default=False,
)
TYPE = typer.Option(
    None, "--type", "-t", help="avro, json or protobuf (default: guessed from the file)."
)
REFERENCE = typer.Option(
    [],
    "--reference",
    "-r",
    help="A reference NAME=SUBJECT:VERSION (repeatable), e.g. shop.Address=address:1.",
)


@schema_app.callback()
def _schema_group() -> None:
    """Register, inspect and check schemas in the schema registry."""


def _client(url: str | None, *, reading: bool = False) -> RegistryClient:
    """A client of ``--registry``; ``reading``: the command only reads, so an embedded
    registry file that does not exist is an error (exit 1), not a new empty registry."""
    chosen = check_url(url or DEFAULT_STORAGE_URL, "the --registry URL")
    if reading:
        existing(
            chosen,
            "schema registry",
            "check --registry (or CHOREO_REGISTRY_URL): give the registry that holds your "
            "schemas; choreo schema register creates an embedded one",
        )
    return RegistryClient.from_url(chosen)


def _references(raw: list[str]) -> tuple[Reference, ...]:
    """``NAME=SUBJECT:VERSION`` options as references (a malformed one is a usage error)."""
    refs = []
    for text in raw:
        name, _, target = text.partition("=")
        subject, _, version = target.rpartition(":")
        if not (name and subject and re.fullmatch(r"[0-9]{1,9}", version)):
            fail(f"--reference {text!r} must look like NAME=SUBJECT:VERSION", EXIT_USAGE)
        refs.append(Reference(name, subject, int(version)))
    return tuple(refs)


def _read_schema(path: Path, kind: TypeChoice | None, refs: list[str] | None = None) -> Schema:
    """The schema in ``path``; a missing file or bad JSON is a usage error (exit 2)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"cannot read schema file {path}: {exc.strerror or exc}", EXIT_USAGE)
    if kind is TypeChoice.protobuf or (kind is None and path.suffix == ".proto"):
        return Schema(text, SchemaType.PROTOBUF, _references(refs or []))
    try:
        document = json.loads(text)
    except ValueError as exc:
        fail(
            f"schema file {path} is not JSON (for a .proto file use --type protobuf): {exc}",
            EXIT_USAGE,
        )
    if kind is None:
        looks_json = isinstance(document, dict) and (
            "$schema" in document or "properties" in document
        )
        kind = TypeChoice.json if looks_json else TypeChoice.avro
    return Schema(text, SchemaType.parse(kind.value), _references(refs or []))


def _table(*columns: str) -> Table:
    table = Table(show_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column)
    return table


@schema_app.command("register")
def register(
    subject: str = typer.Argument(..., help="Subject to register under, e.g. orders-value."),
    file: Path = typer.Argument(
        ..., help="File holding the schema (.avsc, JSON Schema or .proto)."
    ),
    *,
    kind: TypeChoice | None = TYPE,
    reference: list[str] = REFERENCE,
    registry: str | None = REGISTRY,
    output: Output = OutputChoiceOption,
) -> None:
    """Register a schema; prints its global id and the subject's version."""
    schema = _read_schema(file, kind, reference)

    async def main() -> dict[str, Any]:
        async with _client(registry) as client:
            try:
                found = await client.register_full(subject, schema)
            except IncompatibleSchemaError as exc:
                why = await _refusal(client, subject, file, schema)
                raise IncompatibleSchemaError(why, exc.reasons) from exc
            return {"subject": found.subject, "version": found.version, "id": found.id}

    result = run(main())
    if output is Output.json:
        print_json(result)
    else:
        out_console.print(f"registered {subject} version {result['version']} (id {result['id']})")


async def _refusal(client: RegistryClient, subject: str, file: Path, schema: Schema) -> str:
    """One line for a refused registration: the subject's level, what breaks it (the
    registry's own message holds every earlier schema in full), and what to run."""
    result = await client.check_compatibility(subject, schema)
    level = await client.compatibility(subject)
    found = (_DESCRIPTION.search(message) for message in result.messages)
    why = "; ".join(" ".join(f"{m[1]} {m[2]}".split()) for m in found if m) or "see the check"
    kind = schema.type.value.lower()
    return (
        f"{subject} refuses {file} under {level.value} compatibility: {why}; "
        f"details: choreo schema check {subject} {file} --type {kind}; "
        f"to change the level: choreo schema config {subject} --level LEVEL"
    )


#: The description in one of Confluent's compatibility messages.
_DESCRIPTION = re.compile(r"errorType:'(\w+)', description:'(.*)'\}\n?\Z", re.DOTALL)


@schema_app.command("ls")
def list_subjects(
    deleted: bool = typer.Option(False, "--deleted", help="Include soft-deleted subjects."),
    registry: str | None = REGISTRY,
    output: Output = OutputChoiceOption,
) -> None:
    """List subjects with their latest version, id and type."""

    async def main() -> list[dict[str, Any]]:
        async with _client(registry, reading=True) as client:
            rows: list[dict[str, Any]] = []
            for subject in await client.subjects(deleted=deleted):
                try:
                    latest = await client.latest(subject)
                except RegistryError:
                    rows.append({"subject": subject, "version": None, "id": None, "type": None})
                    continue
                rows.append(
                    {
                        "subject": subject,
                        "version": latest.version,
                        "id": latest.id,
                        "type": latest.schema.type.value,
                    }
                )
            return rows

    rows = run(main())
    if output is Output.json:
        print_json(rows)
        return
    table = _table("SUBJECT", "VERSION", "ID", "TYPE")
    for row in rows:
        table.add_row(*(str(row[k]) if row[k] is not None else "-" for k in row))
    out_console.print(table)


@schema_app.command("show")
def show(
    subject: str = typer.Argument(..., help="Subject to show."),
    *,
    version: str = typer.Option("latest", "--version", "-v", help="Version number or latest."),
    registry: str | None = REGISTRY,
    output: Output = OutputChoiceOption,
) -> None:
    """Show one version of a subject's schema."""

    async def main() -> dict[str, Any]:
        async with _client(registry, reading=True) as client:
            return (await client.version(subject, version)).to_dict()

    found = run(main())
    if output is Output.json:
        print_json(found)
        return
    kind = found.get("schemaType", "AVRO")
    out_console.print(f"{subject} version {found['version']} (id {found['id']}, {kind})")
    if kind == SchemaType.PROTOBUF.value:
        out_console.print(found["schema"], markup=False, highlight=False)
    else:
        out_console.print_json(found["schema"])


@schema_app.command("check")
def check(
    subject: str = typer.Argument(..., help="Subject to check against."),
    file: Path = typer.Argument(..., help="File holding the candidate schema."),
    *,
    kind: TypeChoice | None = TYPE,
    reference: list[str] = REFERENCE,
    version: str | None = typer.Option(
        None, "--version", "-v", help="Check against one version (default: as the level says)."
    ),
    registry: str | None = REGISTRY,
    output: Output = OutputChoiceOption,
) -> None:
    """Say whether a schema may be registered under a subject; exit 1 if it may not."""
    schema = _read_schema(file, kind, reference)

    async def main() -> tuple[bool, list[str], str, bool]:
        async with _client(registry, reading=True) as client:
            try:
                result = await client.check_compatibility(subject, schema, version=version)
            except VersionNotFoundError as exc:
                raise VersionNotFoundError(
                    f"no version {version} of subject {subject!r} to check against ({exc}); "
                    f"list its versions with: choreo schema show {shlex.quote(subject)}"
                ) from None
            level = await client.compatibility(subject)
            exists = subject in await client.subjects()
            return result.is_compatible, list(result.messages), level.value, exists

    ok, messages, level, exists = run(main())
    if output is Output.json:
        print_json(
            {
                "subject": subject,
                "level": level,
                "is_compatible": ok,
                "messages": messages,
                "exists": exists,
            }
        )
    elif not exists:  # as Confluent's registry answers: nothing to break, any schema may come
        out_console.print(
            f"compatible: no subject {subject} yet, so nothing to check against and any schema "
            "may be registered as its version 1; check the name with: choreo schema ls"
        )
    elif ok:
        out_console.print(f"compatible: {subject} accepts this schema under {level}")
    else:
        out_console.print(f"incompatible with {subject} under {level}:")
        for message in messages:
            out_console.print(f"  - {message}")
    if not ok:
        raise typer.Exit(EXIT_FAILURE)


@schema_app.command("config")
def config(
    subject: str | None = typer.Argument(None, help="Subject (default: the global level)."),
    *,
    level: str | None = typer.Option(None, "--level", "-l", help="Set this compatibility level."),
    registry: str | None = REGISTRY,
    output: Output = OutputChoiceOption,
) -> None:
    """Show, or with --level set, the compatibility level of a subject or of the registry."""
    if level is not None:
        try:
            level = Compatibility.parse(level).value
        except RegistryError as exc:
            fail(str(exc), EXIT_USAGE)

    async def main() -> str:
        async with _client(registry, reading=level is None) as client:
            if level is not None:
                await client.set_compatibility(level, subject)
            return (await client.compatibility(subject)).value

    current = run(main())
    if output is Output.json:
        print_json({"subject": subject, "compatibilityLevel": current})
    else:
        out_console.print(f"{subject or 'global'}: {current}")
