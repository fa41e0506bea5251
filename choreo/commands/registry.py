"""``choreo registry serve``: the Confluent-compatible schema registry over HTTP."""

from __future__ import annotations

import typer

from choreo.console import fail, out_console, reported
from choreo.errors import EXIT_USAGE
from schemas.storage import DEFAULT_STORAGE_URL

__all__ = ["registry_app"]

registry_app = typer.Typer(
    help="Run the Confluent-compatible schema registry.", no_args_is_help=True
)


@registry_app.callback()
def _registry_group() -> None:
    """Run the Confluent-compatible schema registry."""


@registry_app.command("serve")
def serve(
    *,
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8081, "--port", help="Port to listen on."),
    storage: str = typer.Option(
        DEFAULT_STORAGE_URL,
        "--storage",
        envvar="CHOREO_REGISTRY_STORAGE",
        help="sqlite:///path/to/registry.db or postgresql://user@host:5432/db",
    ),
    user: str | None = typer.Option(None, "--auth-user", help="Require HTTP basic auth."),
    password: str | None = typer.Option(
        None, "--auth-password", envvar="CHOREO_REGISTRY_PASSWORD", help="Basic auth password."
    ),
    token: str | None = typer.Option(
        None, "--auth-token", envvar="CHOREO_REGISTRY_TOKEN", help="Require this bearer token."
    ),
) -> None:
    """Serve the Confluent-compatible REST API (Ctrl-C to stop)."""
    import uvicorn

    from schemas.registry import Registry
    from schemas.server import Auth, BasicAuth, BearerAuth, create_app

    if (user is None) != (password is None):
        fail("--auth-user and --auth-password go together", EXIT_USAGE)
    auth: Auth | None = None
    if user is not None and password is not None:
        auth = BasicAuth(user, password)
    elif token:
        auth = BearerAuth(token)
    with reported():
        registry = Registry.open(storage)
    out_console.print(f"schema registry on http://{host}:{port} storing in {registry.url}")
    try:
        uvicorn.run(create_app(registry, auth=auth), host=host, port=port, log_level="warning")
    finally:
        registry.close()
