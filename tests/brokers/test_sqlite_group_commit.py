"""The embedded broker's group commit: publishes flushed in one transaction are isolated, so a
row the database cannot take fails alone and every other publish of the flush is stored."""

from __future__ import annotations

import asyncio
from pathlib import Path

from broker import Bus, PublishError


async def test_a_row_sqlite_refuses_fails_alone_in_its_group_commit(tmp_path: Path) -> None:
    """A publish to a topic named with a lone surrogate, flushed together with twenty good
    publishes, fails with one-line PublishError while the twenty are stored; nothing hangs."""
    async with Bus(f"sqlite:///{tmp_path}/b.db") as bus:
        calls = [bus.publish("t", type="good", data={"n": n}) for n in range(20)]
        calls.insert(7, bus.publish("t\ud800", type="bad"))
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 30)
        failed = [result for result in results if isinstance(result, BaseException)]
        assert [PublishError] == [type(error) for error in failed]
        assert "\n" not in str(failed[0])
        assert 20 == len(await bus.browse("t"))
        result = await asyncio.wait_for(
            bus.publish_many("t", [{"type": "good"}, {"type": "good"}]), 30
        )
        assert [True, True] == [outcome.ok for outcome in result]
        bad_topic = await asyncio.wait_for(bus.publish_many("t\udcff", [{"type": "bad"}]), 30)
        assert [False] == [outcome.ok for outcome in bad_topic]
        assert 22 == len(await bus.browse("t"))
