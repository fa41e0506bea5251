"""``choreo dlq`` as an operator uses it on the embedded broker: a listing whose ids can be
copied into ``show``/``replay --id``, that says when more dead letters wait than it shows, and
a purge that names the ids it cannot find instead of reporting success."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from broker import Bus, Event, deadletter
from tests.test_cli import choreo


@pytest.fixture
def broker(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/broker.db"


def _dead_letters(broker: str, count: int) -> list[str]:
    """Put ``count`` dead letters of topic ``jobs`` in ``jobs.dlq``; their ids, in order."""

    async def put() -> list[str]:
        async with Bus(broker) as bus:
            events = [
                deadletter.dead_letter(
                    Event(type="job.created", source="tests", data={"n": n}),
                    reason=deadletter.HANDLER_ERROR,
                    error=RuntimeError("the printer is on fire"),
                    topic="jobs",
                    group="printers",
                    attempts=3,
                )
                for n in range(count)
            ]
            (await bus.publish_many("jobs.dlq", events)).raise_for_failures()
            return [event.id for event in events]

    return asyncio.run(put())


def _listed(broker: str, tmp_path: Path, *options: str) -> list[str]:
    result = choreo(
        "dlq", "ls", "jobs", "--output", "json", *options, "--broker", broker, cwd=tmp_path
    )
    assert 0 == result.returncode, result.stderr
    return [entry["id"] for entry in json.loads(result.stdout)]


def test_the_table_shows_whole_ids_on_a_narrow_terminal(tmp_path: Path, broker: str) -> None:
    """On an 80-column terminal (or a pipe) the table keeps every id whole, so it can be copied
    into ``dlq show`` or ``dlq replay --id``."""
    ids = _dead_letters(broker, 2)
    env = {**os.environ, "COLUMNS": "80"}
    result = choreo("dlq", "ls", "jobs", "--broker", broker, cwd=tmp_path, env=env)
    assert 0 == result.returncode, result.stderr
    assert [True, True] == [event_id in result.stdout for event_id in ids]


def test_a_listing_says_when_more_dead_letters_wait(tmp_path: Path, broker: str) -> None:
    """A listing cut by ``--limit`` says so on stderr with the ``--offset`` of the next page, and
    the pages together list every dead letter once, oldest first."""
    ids = _dead_letters(broker, 5)
    first = choreo("dlq", "ls", "jobs", "--limit", "2", "--broker", broker, cwd=tmp_path)
    assert 0 == first.returncode, first.stderr
    assert "jobs.dlq holds more than the 2 dead letters shown" in first.stderr
    assert "--offset 2" in first.stderr
    pages = [_listed(broker, tmp_path, "--limit", "2", "--offset", str(n)) for n in (0, 2, 4)]
    assert ids == [event_id for page in pages for event_id in page]
    last = choreo(
        "dlq", "ls", "jobs", "--limit", "2", "--offset", "4", "--broker", broker, cwd=tmp_path
    )
    assert "" == last.stderr


def test_a_purge_of_an_unknown_id_deletes_nothing(tmp_path: Path, broker: str) -> None:
    """``dlq purge --id`` with an id that is not there (a typo) exits 1 with one line naming it,
    and deletes nothing, not even the ids that are there."""
    ids = _dead_letters(broker, 2)
    result = choreo(
        "dlq",
        "purge",
        "jobs",
        "--id",
        ids[0],
        "--id",
        "no-such-id",
        "--broker",
        broker,
        cwd=tmp_path,
    )
    assert 1 == result.returncode
    assert [
        "error: no event with id no-such-id in jobs.dlq; nothing was purged; "
        "list them with: choreo dlq ls jobs"
    ] == result.stderr.splitlines()
    assert ids == _listed(broker, tmp_path)
