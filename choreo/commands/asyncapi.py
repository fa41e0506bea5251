"""``choreo asyncapi MODULE:ATTR`` prints an application's AsyncAPI 3.0 document;
``choreo asyncapi serve MODULE:ATTR`` shows it as a page.

MODULE:ATTR names a :class:`broker.Bus`, a list or tuple of them, or a function without
arguments returning either, the way ``uvicorn`` names an app (the working directory is on the
import path). Payload schemas named by a registry subject are read from ``--registry``, else
the registry of the bus's codec, else the configured registry (``CHOREO_REGISTRY_URL``).
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import sys
from enum import StrEnum
from typing import Any

import typer
from typer.core import TyperGroup

from broker.asyncapi import asyncapi_document, to_yaml
from broker.bus import Bus
from choreo.commands.options import port_option
from choreo.commands.serving import listen
from choreo.config import setting
from choreo.console import fail, out_console, reported, run
from choreo.errors import EXIT_FAILURE, EXIT_USAGE
from schemas.client import RegistryClient
from schemas.codec import SchemaCodec
from schemas.errors import SubjectNotFoundError

__all__ = ["asyncapi_app", "load_buses"]

_DEFAULT = "generate"


class _DefaultCommand(TyperGroup):
    """``choreo asyncapi MODULE:ATTR`` means ``choreo asyncapi generate MODULE:ATTR``."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # Any: click's or typer's
        if args and args[0] not in self.commands and args[0] != "--help":
            args = [_DEFAULT, *args]
        return super().parse_args(ctx, args)


asyncapi_app = typer.Typer(
    cls=_DefaultCommand,
    help=(
        "AsyncAPI 3.0 document of an application's buses: `choreo asyncapi MODULE:ATTR` "
        "prints it, `choreo asyncapi serve MODULE:ATTR` shows it as a page."
    ),
    no_args_is_help=True,
)


class Format(StrEnum):
    """How the document is printed."""

    json = "json"
    yaml = "yaml"


TARGET = typer.Argument(
    ..., metavar="MODULE:ATTR", help="A Bus, a list of Buses or a function returning them."
)
REGISTRY = typer.Option(
    None,
    "--registry",
    help="Registry for schema= subjects (default: the bus codec's, else CHOREO_REGISTRY_URL).",
    show_default=False,
)
TITLE = typer.Option(None, "--title", help="Document title (default: the buses' sources).")
APP_VERSION = typer.Option("1.0.0", "--app-version", help="The application's API version.")

_NEEDS = "MODULE:ATTR must name a Bus, a list of Buses or a function returning them"


def _import(module: str, target: str) -> Any:
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        with reported():
            return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            fail(
                f"cannot import {module!r} for {target}: no module named {exc.name!r}; run from "
                "the directory that holds it or fix the name",
                EXIT_USAGE,
            )
        fail(f"importing {module!r} for {target} failed: {exc}", EXIT_FAILURE)


def _as_buses(value: Any, target: str, *, call: bool = True) -> list[Bus]:
    if isinstance(value, Bus):
        return [value]
    if isinstance(value, list | tuple) and value and all(isinstance(b, Bus) for b in value):
        return list(value)
    if call and callable(value) and not isinstance(value, type):
        try:
            inspect.signature(value).bind()
        except (TypeError, ValueError):
            fail(f"{target} takes arguments; {_NEEDS} (without arguments)", EXIT_USAGE)
        with reported():
            produced = value()
        return _as_buses(produced, f"what {target} returned", call=False)
    if isinstance(value, list | tuple):
        strays = [type(b).__name__ for b in value if not isinstance(b, Bus)]
        shown = f"a {type(value).__name__} holding {strays[0]}" if strays else "empty"
    else:
        shown = type(value).__name__
    fail(f"{target} is {shown}, not a Bus; {_NEEDS}", EXIT_USAGE)


def load_buses(target: str) -> list[Bus]:
    """The buses ``MODULE:ATTR`` names (one line and exit 2 when it names none)."""
    module, sep, attr = target.partition(":")
    if not sep or not module or not attr:
        fail(f"{target!r} is not MODULE:ATTR (e.g. myapp.events:bus); {_NEEDS}", EXIT_USAGE)
    value = _import(module, target)
    for part in attr.split("."):
        if not hasattr(value, part):
            fail(f"{target}: {module!r} has no attribute {attr!r}; {_NEEDS}", EXIT_USAGE)
        value = getattr(value, part)
    return _as_buses(value, target)


def _declares_subjects(buses: list[Bus]) -> bool:
    declared = [(b.declarations.publications, b.declarations.subscriptions) for b in buses]
    schemas = [spec.schema for group in declared for specs in group for spec in specs]
    return any(isinstance(schema, str) for schema in schemas)


async def _document(
    buses: list[Bus], registry_url: str | None, title: str | None, version: str
) -> dict[str, Any]:
    """The document, with subjects read from ``--registry``, else the registry of a bus's
    codec, else the configured one (opened only when a subject is declared)."""
    codecs = [b.codec.client for b in buses if isinstance(b.codec, SchemaCodec)]
    url = registry_url
    if url is None and not codecs and _declares_subjects(buses):
        url = setting("registry_url")
    opened = RegistryClient.from_url(url) if url is not None else None
    registry = opened or (codecs[0] if codecs else None)
    try:
        return await asyncapi_document(buses, registry=registry, title=title, version=version)
    except SubjectNotFoundError as exc:
        where = registry.url if registry is not None else "the registry"
        fail(f"{exc} in {where}; register it (choreo schema register) or pass --registry URL")
    finally:
        if opened is not None:
            await opened.close()


@asyncapi_app.command(_DEFAULT)
def generate(
    target: str = TARGET,
    output: Format = typer.Option(Format.json, "--output", "-o", help="json or yaml."),
    registry: str | None = REGISTRY,
    title: str | None = TITLE,
    app_version: str = APP_VERSION,
) -> None:
    """Print the AsyncAPI 3.0 document (the default: `choreo asyncapi MODULE:ATTR`)."""
    document = run(_document(load_buses(target), registry, title, app_version))
    text = to_yaml(document) if output is Format.yaml else json.dumps(document, indent=2) + "\n"
    sys.stdout.write(text)
    sys.stdout.flush()


@asyncapi_app.command("serve")
def serve(
    target: str = TARGET,
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = port_option(8080, "--port", "Port to listen on."),
    registry: str | None = REGISTRY,
    title: str | None = TITLE,
    app_version: str = APP_VERSION,
) -> None:
    """Serve the document as a page; raw at /asyncapi.json and /asyncapi.yaml (Ctrl-C stops)."""
    import uvicorn

    from broker.asyncapi.web import create_app

    document = run(_document(load_buses(target), registry, title, app_version))
    sock = listen(host, port)
    out_console.print(f"AsyncAPI page of {document['info']['title']} on http://{host}:{port}/")
    config = uvicorn.Config(create_app(document), log_level="warning")
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
