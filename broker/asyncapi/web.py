"""The AsyncAPI page over HTTP: ``/`` (the page), ``/asyncapi.json`` and ``/asyncapi.yaml``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse

from broker.asyncapi.page import render_page, to_yaml

__all__ = ["create_app"]


def create_app(document: Mapping[str, Any]) -> FastAPI:
    """An app serving ``document`` (rendered once: the document does not change)."""
    page = render_page(document)
    as_yaml = to_yaml(document)
    as_json = dict(document)
    app = FastAPI(
        title=str((document.get("info") or {}).get("title", "AsyncAPI")),
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/asyncapi.json")
    def raw_json() -> JSONResponse:
        return JSONResponse(as_json)

    @app.get("/asyncapi.yaml")
    def raw_yaml() -> PlainTextResponse:
        return PlainTextResponse(as_yaml, media_type="application/yaml")

    return app
