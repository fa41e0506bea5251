"""``choreo dlq`` as an operator uses it on the embedded broker: a listing whose ids can be
copied into ``show``/``replay --id``, that says when more dead letters wait than it shows, and
a purge that names the ids it cannot find instead of reporting success, groups of failures to
replay or purge at once, filters, and one rule for "nothing matched" (exit 0, said on stderr)."""

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


def _dead_letters(
    broker: str,
    count: int,
    *,
    type: str = "job.created",
    error: Exception | None = None,
    hour: int = 12,
) -> list[str]:
    """Put ``count`` dead letters of topic ``jobs`` in ``jobs.dlq`` (dead-lettered on
    2026-12-01 at ``hour``:00 UTC); their ids, in order."""

    async def put() -> list[str]:
        async with Bus(broker) as bus:
            events = [
                deadletter.dead_letter(
                    Event(type=type, source="tests", data={"n": n}),
                    reason=deadletter.HANDLER_ERROR,
                    error=error or RuntimeError("the printer is on fire"),
                    topic="jobs",
                    group="printers",
                    attempts=3,
                    time=f"2026-12-01T{hour:02}:00:00Z",
                )
                for n in range(count)
            ]
            (await bus.publish_many("jobs.dlq", events)).raise_for_failures()
            return [event.id for event in events]

    return asyncio.run(put())


def _mixed(broker: str) -> tuple[list[str], list[str]]:
    """Two printer fires (job.created, 10:00) and one paper jam (job.cancelled, 14:00)."""
    fire = _dead_letters(broker, 2, hour=10)
    paper = _dead_letters(broker, 1, type="job.cancelled", error=KeyError("jam"), hour=14)
    return fire, paper


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


def test_groups_count_each_failure_once(tmp_path: Path, broker: str) -> None:
    """``dlq groups --output json`` has one row per (reason, exception type, event type), the
    largest first, with its count, first and last time, and the oldest id as an example."""
    fire, paper = _mixed(broker)
    result = choreo("dlq", "groups", "jobs", "-o", "json", "--broker", broker, cwd=tmp_path)
    assert 0 == result.returncode, result.stderr
    rows = json.loads(result.stdout)
    assert [
        {
            "dlq": "jobs.dlq",
            "key": {"reason": "handler-error", "error": "RuntimeError", "type": "job.created"},
            "count": 2,
            "first": "2026-12-01T10:00:00Z",
            "last": "2026-12-01T10:00:00Z",
            "example": fire[0],
        },
        {
            "dlq": "jobs.dlq",
            "key": {"reason": "handler-error", "error": "KeyError", "type": "job.cancelled"},
            "count": 1,
            "first": "2026-12-01T14:00:00Z",
            "last": "2026-12-01T14:00:00Z",
            "example": paper[0],
        },
    ] == [{k: v for k, v in row.items() if k != "group"} for row in rows]
    by_type = choreo(
        "dlq", "groups", "jobs", "--by", "type", "-o", "json", "--broker", broker, cwd=tmp_path
    )
    assert [{"type": "job.created"}, {"type": "job.cancelled"}] == [
        row["key"] for row in json.loads(by_type.stdout)
    ]


def test_a_group_is_replayed_to_another_topic_and_only_it_leaves(
    tmp_path: Path, broker: str
) -> None:
    """``dlq replay --group ID --to TOPIC`` publishes that group's dead letters to TOPIC and
    deletes them, and only them, from the DLQ."""
    fire, paper = _mixed(broker)
    rows = json.loads(
        choreo("dlq", "groups", "jobs", "-o", "json", "--broker", broker, cwd=tmp_path).stdout
    )
    result = choreo(
        "dlq", "replay", "jobs", "--group", rows[0]["group"], "--to", "jobs-quarantine",
        "--broker", broker, cwd=tmp_path,
    )  # fmt: skip
    assert (0, "replayed 2 event(s)\n") == (result.returncode, result.stdout), result.stderr
    assert paper == _listed(broker, tmp_path)

    async def quarantined() -> list[str]:
        async with Bus(broker) as bus:
            return [e.id for e in await bus.browse("jobs-quarantine")]

    assert fire == asyncio.run(quarantined())


def test_filters_choose_what_a_purge_deletes(tmp_path: Path, broker: str) -> None:
    """``purge --type`` and ``purge --since`` delete only the dead letters that match."""
    fire, paper = _mixed(broker)
    since = choreo(
        "dlq", "ls", "jobs", "--since", "2026-12-01T12:00:00Z", "-o", "json",
        "--broker", broker, cwd=tmp_path,
    )  # fmt: skip
    assert paper == [entry["id"] for entry in json.loads(since.stdout)]
    result = choreo(
        "dlq", "purge", "jobs", "--type", "job.cancelled", "--broker", broker, cwd=tmp_path
    )
    assert (0, "purged 1 event(s)\n") == (result.returncode, result.stdout), result.stderr
    assert fire == _listed(broker, tmp_path)


@pytest.mark.parametrize("command", ["replay", "purge"])
def test_nothing_matched_exits_0_and_says_so(tmp_path: Path, broker: str, command: str) -> None:
    """Choosing nothing is not a failure: on an empty DLQ, or with filters nothing matches,
    ``replay`` and ``purge`` exit 0, print that they did nothing, and say why on stderr."""
    done = {"replay": "replayed", "purge": "purged"}[command]
    _dead_letters(broker, 0)  # the broker exists (a missing one is a failure, exit 1)
    empty = choreo("dlq", command, "jobs", "--broker", broker, cwd=tmp_path)
    assert (0, f"{done} 0 event(s)\n") == (empty.returncode, empty.stdout)
    assert [f"warning: no dead letters in jobs.dlq; nothing was {done}"] == (
        empty.stderr.splitlines()
    )
    ids = _dead_letters(broker, 1)
    filtered = choreo("dlq", command, "jobs", "--reason", "flood", "--broker", broker, cwd=tmp_path)
    assert (0, f"{done} 0 event(s)\n") == (filtered.returncode, filtered.stdout)
    assert [
        f"warning: no dead letters in jobs.dlq match reason~'flood'; nothing was {done}"
    ] == filtered.stderr.splitlines()
    assert ids == _listed(broker, tmp_path, "--type", "job.created")
    assert [] == _listed(broker, tmp_path, "--type", "job.archived")


@pytest.mark.parametrize(
    ("args", "code", "line"),
    [
        (
            ["replay", "jobs", "--since", "notadate"],
            2,
            "'notadate' is not a time for --since; use RFC 3339 with a zone "
            "(2026-12-01T09:00:00Z) or a duration ago (30m, 2h, 1d)",
        ),
        (
            ["replay", "jobs", "--to", "jobs.dlq"],
            2,
            "cannot replay jobs.dlq into itself; name another topic to replay to",
        ),
        (
            ["purge", "jobs", "--group", "0123456789"],
            1,
            "no group 0123456789 in jobs.dlq (grouped by reason,error,type); nothing was "
            "purged; list them with: choreo dlq groups jobs",
        ),
        (
            ["ls", "jobs", "--group", "0123456789"],
            1,
            "no group 0123456789 in jobs.dlq (grouped by reason,error,type)",
        ),
        (
            ["groups", "jobs", "--by", "colour"],
            2,
            "cannot group by colour; use reason, error, type, source, topic, group",
        ),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    tmp_path: Path, broker: str, args: list[str], code: int, line: str
) -> None:
    """A bad time, a replay into the DLQ itself, an unknown group or grouping key: one line
    on stderr, the usage (2) or failure (1) exit code, and every dead letter stays."""
    ids = _dead_letters(broker, 2)
    result = choreo("dlq", *args, "--broker", broker, cwd=tmp_path)
    assert (code, "") == (result.returncode, result.stdout)
    assert 1 == len(result.stderr.splitlines()), result.stderr
    assert line in result.stderr
    assert ids == _listed(broker, tmp_path)


@pytest.mark.kafka
@pytest.mark.parametrize("command", ["replay", "purge"])
def test_kafka_refuses_a_filtered_replay_or_purge_in_one_line(
    tmp_path: Path, kafka_url: str, command: str
) -> None:
    """Kafka cannot delete single records: a replay or purge with filters is a usage error
    (exit 2) in one line that says what to do instead, before anything is read or sent."""
    result = choreo(
        "dlq", command, "jobs", "--type", "job.created", "--broker", kafka_url, cwd=tmp_path
    )
    assert (2, "") == (result.returncode, result.stdout)
    assert [
        f"error: {kafka_url} cannot delete single events from jobs.dlq, so a {command} of the "
        f"dead letters that match type=job.created is refused; {command} the whole jobs.dlq "
        "(without --id and filters), or copy what you need first (choreo dlq ls ... --output "
        "json)"
    ] == [line for line in result.stderr.splitlines() if not line.startswith("{")]
    # (a JSON log line may come first: Tansu refuses the idempotent producer, see
    # docs/brokers/kafka.md; it is the connection's, not the command's)
