"""``python -m choreo`` runs the CLI."""

from choreo.cli import main

main()
