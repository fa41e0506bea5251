"""``choreo demo``: run the order-fulfilment choreography end to end (see :mod:`choreo.demo`)."""

from __future__ import annotations

import typer

__all__ = ["demo"]


def demo(
    broker: str | None = typer.Option(
        None, "--broker", "-b", help="Broker URL (default embedded)."
    ),
    orders: int = typer.Option(200, "--orders", "-n", help="How many orders to run."),
    workdir: str = typer.Option(".choreo/demo", "--dir", help="Where the demo keeps its files."),
) -> None:
    """Run an order-fulfilment choreography end to end and show what happened."""
    from choreo.demo import run_demo

    run_demo(broker=broker, orders=orders, workdir=workdir)
