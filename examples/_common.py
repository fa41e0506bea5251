"""What every example service shares: the broker URL from the command line, and running until
Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from broker import Bus


def parse_broker(description: str) -> str:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--broker",
        default="sqlite:///.choreo/examples.db",
        help="broker URL (default: an embedded SQLite file)",
    )
    return str(parser.parse_args().broker)


async def serve(bus: Bus) -> None:
    """Run the bus's subscriptions until SIGINT/SIGTERM, then stop cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    async with bus:
        await stop.wait()
