"""``choreo registry serve``: the Confluent-compatible schema registry over HTTP."""

from __future__ import annotations

import os

import typer

from choreo.commands.options import port_option
from choreo.commands.serving import listen, serve
from choreo.config import check_url
from choreo.console import out_console, reported
from schemas.storage import DEFAULT_STORAGE_URL

__all__ = ["registry_app"]

registry_app = typer.Typer(
    help="Run the Confluent-compatible schema registry.", no_args_is_help=True
)


@registry_app.callback()
def _registry_group() -> None:
    """Run the Confluent-compatible schema registry."""


@registry_app.command("serve")
def serve_registry(
    *,
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = port_option(8081, "--port", "Port to listen on."),
    storage: str = typer.Option(
        DEFAULT_STORAGE_URL,
        "--storage",
        envvar="CHOREO_REGISTRY_STORAGE",
        help="sqlite:///path/to/registry.db or postgresql://user@host:5432/db",
    ),
    user: str | None = typer.Option(None, "--auth-user", help="Require HTTP basic auth."),
    password: str | None = typer.Option(
        None, "--auth-password", help="Basic auth password (env CHOREO_REGISTRY_PASSWORD)."
    ),
    token: str | None = typer.Option(
        None, "--auth-token", help="Require this bearer token (env CHOREO_REGISTRY_TOKEN)."
    ),
) -> None:
    """Serve the Confluent-compatible REST API (Ctrl-C to stop)."""
    from schemas.http_auth import auth_from_settings
    from schemas.registry import Registry
    from schemas.server import REALM, create_app

    with reported():  # an empty variable is a setting too: it must not switch auth off
        auth = auth_from_settings(
            user,
            password if password is not None else os.environ.get("CHOREO_REGISTRY_PASSWORD"),
            token if token is not None else os.environ.get("CHOREO_REGISTRY_TOKEN"),
            realm=REALM,
        )
    sock = listen(host, port)
    with reported():
        registry = Registry.open(check_url(storage, "the --storage URL"))
    out_console.print(f"schema registry on http://{host}:{port} storing in {registry.url}")
    try:
        app = create_app(registry, auth=auth)
        serve(app, sock, name="schema registry", authenticated=auth is not None)
    finally:
        registry.close()
