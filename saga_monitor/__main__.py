"""``python -m saga_monitor ...``: the ``choreo saga`` commands on their own."""

from saga_monitor.cli import saga_app

saga_app(prog_name="python -m saga_monitor")
