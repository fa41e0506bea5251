"""The ``choreo`` command line: one entry point that mounts each package's commands."""

__all__: list[str] = []
