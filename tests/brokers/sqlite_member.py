"""A member of a SQLite broker group in a process of its own, for the lease tests:

    python -m tests.brokers.sqlite_member URL TOPIC GROUP SINK [hold]

It subscribes (from the beginning), then writes JSON lines to SINK: ``{"joined": time}`` once
the subscription is up and ``{"id": ..., "at": time}`` per handled event. With ``hold``, an
event whose data is ``"hold"`` is never finished (its delivery stays unacked for as long as the
process lives) and noted as ``{"holding": id}``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import TextIO

from broker import Bus, Event


def _note(out: TextIO, **fields: object) -> None:
    out.write(json.dumps(fields) + "\n")
    out.flush()


async def serve(url: str, topic: str, group: str, out: TextIO, hold: bool) -> None:
    async def handle(event: Event) -> None:
        if hold and event.data == "hold":
            _note(out, holding=event.id)
            await asyncio.Event().wait()
        _note(out, id=event.id, at=time.time())

    async with Bus(url) as bus:
        await bus.subscribe(topic, handle, group=group, from_beginning=True)
        _note(out, joined=time.time())
        await asyncio.Event().wait()


if __name__ == "__main__":
    url, topic, group, sink = sys.argv[1:5]
    with open(sink, "a") as sink_file:
        asyncio.run(serve(url, topic, group, sink_file, sys.argv[5:] == ["hold"]))
