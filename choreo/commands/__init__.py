"""The ``choreo`` commands, one module per area; :mod:`choreo.cli` mounts them on one app.

Each command parses its options, builds library objects, calls them and renders the result;
errors become one line and an exit code through :func:`choreo.console.run`.
"""

__all__: list[str] = []
