"""Protobuf schemas as descriptors: compiled, resolved against references, well-known types.

A Protobuf schema arrives as ``.proto`` text or, from confluent-kafka's serializer, as a
base64-encoded ``FileDescriptorProto``. Text is compiled by protoc, the compiler bundled in
``grpcio-tools``, run as a child process (``python -m grpc_tools.protoc``): it is the reference
parser, it resolves every type name and reports errors with line and column, and a hostile
file cannot crash the registry with it. A descriptor is checked by building it into a
:class:`~google.protobuf.descriptor_pool.DescriptorPool`.

Imports resolve through the schema's references, each referenced schema standing for the file
named by its reference name, and through the well-known types the protobuf runtime ships
(``google/protobuf/timestamp.proto`` and the others), which need no reference. Compiled files
are cached by their text and dependencies.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import importlib
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from schemas.errors import InvalidSchemaError
from schemas.model import Schema

if TYPE_CHECKING:
    from google.protobuf.descriptor_pb2 import DescriptorProto, FileDescriptorProto
    from google.protobuf.descriptor_pool import DescriptorPool

__all__ = [
    "MAIN_FILE",
    "CompiledProto",
    "compile_schema",
    "message_paths",
    "well_known",
]

MAIN_FILE = "schema.proto"
_WELL_KNOWN = (
    "any",
    "api",
    "descriptor",
    "duration",
    "empty",
    "field_mask",
    "source_context",
    "struct",
    "timestamp",
    "type",
    "wrappers",
)
_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*(/[A-Za-z0-9_][A-Za-z0-9_.\-]*)*")
_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]+")
_PROTOC_TIMEOUT = 60.0
_LOG_LINE = re.compile(r"\s*$|WARNING: All log messages|[IWE]\d{4} ")


@functools.cache
def well_known() -> dict[str, bytes]:
    """The well-known types' files (``google/protobuf/*.proto``) by name, serialized."""
    files: dict[str, bytes] = {}
    for module_name in _WELL_KNOWN:
        module = importlib.import_module(f"google.protobuf.{module_name}_pb2")
        files[module.DESCRIPTOR.name] = module.DESCRIPTOR.serialized_pb
    return files


@dataclasses.dataclass(frozen=True)
class CompiledProto:
    """A schema's file descriptor and the files it needs, dependencies first."""

    file: FileDescriptorProto
    dependencies: tuple[FileDescriptorProto, ...] = ()

    def pool(self) -> DescriptorPool:
        """A descriptor pool holding the file and its dependencies."""
        return _pool(self.file.SerializeToString(), _files_bytes(self.dependencies))

    def serialized(self) -> str:
        """The file as Confluent's ``format=serialized``: a base64 ``FileDescriptorProto``."""
        return base64.standard_b64encode(self.file.SerializeToString()).decode("ascii")

    def canonical(self, *, normalize: bool = False) -> str:
        """The file without its name and source info (``normalize``: imports and fields
        sorted too), as base64: equal schemas give equal strings, however they were written."""
        from google.protobuf.descriptor_pb2 import FileDescriptorProto

        copy = FileDescriptorProto()
        copy.CopyFrom(self.file)
        copy.ClearField("name")
        copy.ClearField("source_code_info")
        if normalize:
            _normalize(copy)
        return base64.standard_b64encode(copy.SerializeToString(deterministic=True)).decode()


def _files_bytes(files: Sequence[FileDescriptorProto]) -> tuple[bytes, ...]:
    return tuple(f.SerializeToString() for f in files)


@functools.lru_cache(maxsize=256)
def _pool(main: bytes, dependencies: tuple[bytes, ...]) -> DescriptorPool:
    from google.protobuf import descriptor_pool

    pool = descriptor_pool.DescriptorPool()
    try:
        for raw in (*dependencies, main):
            pool.AddSerializedFile(raw)
    except Exception as exc:  # upb and the pure-Python pool raise different types
        raise InvalidSchemaError(f"invalid Protobuf schema: {exc}") from exc
    return pool


def _normalize(file: FileDescriptorProto) -> None:
    if not file.public_dependency and not file.weak_dependency:
        imports = sorted(file.dependency)
        del file.dependency[:]
        file.dependency.extend(imports)
    for message in file.message_type:
        _sort_fields(message)


def _sort_fields(message: DescriptorProto) -> None:
    fields = sorted(message.field, key=lambda field: field.number)
    del message.field[:]
    message.field.extend(fields)
    for nested in message.nested_type:
        _sort_fields(nested)


def compile_schema(
    schema: Schema, dependencies: Sequence[tuple[str, Schema]] = ()
) -> CompiledProto:
    """Compile ``schema`` with its references' schemas (``(reference name, schema)``,
    dependencies first); :class:`InvalidSchemaError` says what is wrong."""
    available: dict[str, bytes] = {}
    for name, dependency in dependencies:
        _check_file_name(name)
        available[name] = _compile(dependency.text, name, tuple(available.items()))
    main_name = MAIN_FILE if MAIN_FILE not in available else f"_{MAIN_FILE}"
    main = _compile(schema.text, main_name, tuple(available.items()))
    return _with_dependencies(main, available)


def _check_file_name(name: str) -> None:
    if not _FILE_NAME.fullmatch(name) or ".." in name.split("/"):
        raise InvalidSchemaError(
            f"Protobuf reference name {name!r} must be the imported file's relative path, "
            "e.g. shop/address.proto"
        )


def _with_dependencies(main: bytes, available: Mapping[str, bytes]) -> CompiledProto:
    from google.protobuf.descriptor_pb2 import FileDescriptorProto

    files = {**well_known(), **available}
    ordered: list[FileDescriptorProto] = []
    seen: set[str] = set()

    def visit(proto: FileDescriptorProto, chain: tuple[str, ...]) -> None:
        for name in proto.dependency:
            if name in seen:
                continue
            if name in chain or name not in files:
                raise InvalidSchemaError(_missing_import(name))
            visit(FileDescriptorProto.FromString(files[name]), (*chain, name))
            seen.add(name)
            ordered.append(FileDescriptorProto.FromString(files[name]))

    file = FileDescriptorProto.FromString(main)
    visit(file, ())
    compiled = CompiledProto(file, tuple(ordered))
    compiled.pool()  # every type resolves, or InvalidSchemaError
    return compiled


def _missing_import(name: str) -> str:
    return (
        f"invalid Protobuf schema: import {name!r} is neither a well-known type nor a "
        f"reference; register it and add a reference named {name!r}"
    )


@functools.lru_cache(maxsize=512)
def _compile(text: str, name: str, available: tuple[tuple[str, bytes], ...]) -> bytes:
    """The serialized ``FileDescriptorProto`` named ``name`` for ``text`` (text or base64)."""

    file = _from_base64(text)
    if file is None:
        return _protoc(text, name, dict(available))
    file.name = name
    file.ClearField("source_code_info")
    return file.SerializeToString(deterministic=True)


def _from_base64(text: str) -> FileDescriptorProto | None:
    from google.protobuf.descriptor_pb2 import FileDescriptorProto
    from google.protobuf.message import DecodeError

    if not text.strip() or not _BASE64.fullmatch(text):
        return None
    try:
        return FileDescriptorProto.FromString(base64.b64decode(text, validate=False))
    except (binascii.Error, DecodeError, ValueError):
        return None


def _protoc(text: str, name: str, available: Mapping[str, bytes]) -> bytes:
    from google.protobuf.descriptor_pb2 import FileDescriptorProto, FileDescriptorSet

    with tempfile.TemporaryDirectory(prefix="choreo-proto-") as tmp:
        root = Path(tmp)
        source = root / "src" / name
        source.parent.mkdir(parents=True)
        source.write_text(text, encoding="utf-8")
        known = {**well_known(), **available}
        imports = FileDescriptorSet(
            file=[FileDescriptorProto.FromString(b) for b in known.values()]
        )
        (root / "imports.pb").write_bytes(imports.SerializeToString())
        command = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "--proto_path=.",
            f"--descriptor_set_in={root / 'imports.pb'}",
            f"--descriptor_set_out={root / 'out.pb'}",
            name,
        ]
        try:
            done = subprocess.run(
                command,
                cwd=root / "src",
                capture_output=True,
                text=True,
                timeout=_PROTOC_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise InvalidSchemaError("invalid Protobuf schema: protoc took too long") from exc
        if done.returncode != 0:
            raise InvalidSchemaError(f"invalid Protobuf schema: {_protoc_errors(done, name)}")
        compiled = FileDescriptorSet.FromString((root / "out.pb").read_bytes())
    return compiled.file[0].SerializeToString(deterministic=True)


def _protoc_errors(done: subprocess.CompletedProcess[str], name: str) -> str:
    if "No module named grpc_tools" in done.stderr:
        return "the Protobuf compiler is missing: pip install grpcio-tools"
    lines = [line.strip() for line in done.stderr.splitlines() if not _LOG_LINE.match(line)]
    lines = [line.replace(f"{name}:", "line ", 1) for line in lines if line][:3]
    text = "; ".join(lines) or f"protoc exited with status {done.returncode}"
    if "File not found" in text or "was not found or had errors" in text:
        text += "; an import needs a reference named after the imported file"
    return text


def message_paths(file: FileDescriptorProto) -> list[tuple[str, tuple[int, ...]]]:
    """Every message's full name with its index path (Confluent's message indexes), in order."""
    prefix = f".{file.package}" if file.package else ""
    out: list[tuple[str, tuple[int, ...]]] = []

    def walk(messages: Sequence[DescriptorProto], scope: str, path: tuple[int, ...]) -> None:
        for index, message in enumerate(messages):
            full = f"{scope}.{message.name}"
            if not message.options.map_entry:
                out.append((full.lstrip("."), (*path, index)))
            walk(message.nested_type, full, (*path, index))

    walk(file.message_type, prefix, ())
    return out
