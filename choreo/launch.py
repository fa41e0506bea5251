"""The ``choreo`` console script's entry point.

Loading the CLI imports every command and its client libraries, which takes a moment (seconds
on a slow machine). A Ctrl-C in that moment would otherwise end in a ``KeyboardInterrupt``
traceback; here it exits 130, as Ctrl-C does once a command runs (see
:func:`choreo.console.reported`).
"""

from __future__ import annotations

__all__ = ["main"]

#: The exit status of a command ended by Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130


def main() -> None:
    """Load the CLI and run it; Ctrl-C while loading (or before a command has taken over its
    own Ctrl-C handling) exits 130 without a traceback."""
    try:
        from choreo.cli import main as run

        run()
    except KeyboardInterrupt:
        raise SystemExit(EXIT_INTERRUPTED) from None
