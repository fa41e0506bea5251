"""Backends. Each module is the only importer of its broker's client library."""

__all__: list[str] = []
