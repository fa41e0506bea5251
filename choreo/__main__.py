"""``python -m choreo`` runs the CLI."""

from choreo.launch import main

main()
