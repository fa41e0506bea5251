"""The adapter kit: options parsed the same way on every backend (typed, with did-you-mean),
one retry loop, one acked-offset tracker, one URL masker and error translation by table."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from broker import ConfigurationError, Event, PublishError, adapter_from_url, mask_url
from broker.adapters.kit import (
    Backoff,
    Horizon,
    OffsetTracker,
    Stopped,
    Translation,
    event_time,
    keep_trying,
    merge_lanes,
    translate,
)
from broker.errors import BrokerUnavailableError

TYPOS = [
    ("memory://kit?partitons=2", "partitions"),
    ("sqlite:///kit.db?visibility_timout=3", "visibility_timeout"),
    ("kafka://u:secret@h:9092?sesion_timeout_ms=6000", "session_timeout_ms"),
    ("amqp://u:secret@h:5672/?publish_timout=5", "publish_timeout"),
    ("nats://u:secret@h:4222?ack_wiat=5", "ack_wait"),
]


@pytest.mark.parametrize(("url", "meant"), TYPOS, ids=[u.split(":")[0] for u, _ in TYPOS])
def test_an_unknown_option_gets_a_did_you_mean(url: str, meant: str) -> None:
    """Every backend refuses a misspelt option in one line naming the masked URL, the closest
    known option and the known ones."""
    with pytest.raises(ConfigurationError) as caught:
        adapter_from_url(url)
    message = str(caught.value)
    assert f"did you mean {meant}?" in message
    assert mask_url(url) in message
    assert "known options:" in message
    assert "secret" not in message
    assert "\n" not in message


def test_option_text_is_converted_to_the_setting_type() -> None:
    """Query-string text becomes the field's type; keyword options win over the URL."""
    adapter = adapter_from_url("kafka://h:9092?auto_create=false&partitions=2", partitions=5)
    settings = adapter.settings
    assert (False, 5) == (settings.auto_create, settings.partitions)


def test_choices_are_checked_and_spelled_as_declared() -> None:
    """An option with choices accepts any case and keeps the declared spelling; another value
    is refused naming the choices."""
    adapter = adapter_from_url("sqlite:///kit.db?synchronous=full")
    assert "FULL" == adapter.settings.synchronous
    with pytest.raises(ConfigurationError, match="use OFF, NORMAL, FULL or EXTRA"):
        adapter_from_url("sqlite:///kit.db?synchronous=sometimes")


def test_a_bare_nats_token_is_masked() -> None:
    """On nats:// a user name without a password is a token, and is masked; elsewhere a user
    name is not a secret."""
    assert "nats://***@h:4222" == mask_url("nats://s3cr3t@h:4222")
    assert "tls://***@h1:4222,h2:4222" == mask_url("tls://s3cr3t@h1:4222,h2:4222")
    assert "kafka://app@h:9092" == mask_url("kafka://app@h:9092")
    assert "nats://h:4222?nkeys_seed=***" == mask_url("nats://h:4222?nkeys_seed=SU123")


def test_offsets_commit_only_the_contiguous_prefix() -> None:
    """Acks out of order move the committable offset only over a gap-free prefix."""
    tracker = OffsetTracker()
    first, second, third = tracker.add(10), tracker.add(11), tracker.add(12)
    assert None is tracker.ack(second)
    assert None is tracker.ack(second)
    assert 11 == tracker.ack(first)
    assert (1, 1) == (tracker.unacked, len(tracker))
    assert 12 == tracker.ack(third)
    assert (0, 0) == (tracker.unacked, len(tracker))


def test_offsets_given_away_are_forgotten() -> None:
    """Entries removed (handed to another member) no longer hold the prefix back."""
    tracker = OffsetTracker()
    first, second = tracker.add(1), tracker.add(2)
    tracker.remove({second})
    assert 1 == tracker.ack(first)
    assert 0 == len(tracker)


FAST = Backoff(initial=0.001, maximum=0.002)


async def test_keep_trying_retries_until_it_works() -> None:
    """Retriable failures are tried again; the result of the attempt that works is returned."""
    failures = [ConnectionError("a"), ConnectionError("b")]

    async def attempt(left: float) -> str:
        if failures:
            raise failures.pop()
        return "sent"

    result = await keep_trying(
        attempt, timeout=10, retriable=lambda e: isinstance(e, ConnectionError), backoff=FAST
    )
    assert ("sent", []) == (result, failures)


async def test_keep_trying_gives_up_at_the_deadline() -> None:
    """When the pause would pass the deadline the timed_out error is raised from the last."""

    async def attempt(left: float) -> None:
        raise ConnectionError("down")

    with pytest.raises(PublishError, match="gave up") as caught:
        await keep_trying(
            attempt,
            timeout=0.01,
            retriable=lambda e: True,
            timed_out=lambda e: PublishError(f"gave up after {e}"),
            backoff=Backoff(initial=0.02),
        )
    assert isinstance(caught.value.__cause__, ConnectionError)


async def test_keep_trying_raises_what_is_not_retriable_at_once() -> None:
    """A failure the caller does not call retriable propagates on the first attempt."""
    calls = []

    async def attempt(left: float) -> None:
        calls.append(left)
        raise ValueError("bad row")

    with pytest.raises(ValueError, match="bad row"):
        await keep_trying(attempt, timeout=None, retriable=lambda e: False)
    assert 1 == len(calls)


async def test_keep_trying_stops_when_asked() -> None:
    """A set stop event ends the waiting between attempts with Stopped."""
    stop = asyncio.Event()

    async def attempt(left: float) -> None:
        stop.set()
        raise ConnectionError("down")

    with pytest.raises(Stopped):
        await keep_trying(attempt, timeout=None, retriable=lambda e: True, stop=stop)


async def test_keep_trying_never_retries_its_own_cancellation() -> None:
    """Cancelling the task that keeps trying ends it, even where retriable says yes to all."""
    started = asyncio.Event()

    async def attempt(left: float) -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(keep_trying(attempt, timeout=None, retriable=lambda e: True))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_translation_takes_the_first_matching_rule() -> None:
    """Client errors become the broker error of the first rule that catches them, with the
    URL masked and the client's message on one line."""
    rules = (
        Translation((ConnectionRefusedError,), BrokerUnavailableError, "{url} refused: {detail}"),
        Translation((OSError,), PublishError, "{url} failed {what}: {name}"),
    )
    refused = translate(ConnectionRefusedError("no\nway"), rules, url="x://u:p@h", what="w")
    other = translate(OSError("disk"), rules, url="x://u:p@h", what="publishing")
    assert (BrokerUnavailableError, "x://u:***@h refused: no way") == (
        type(refused),
        str(refused),
    )
    assert (PublishError, "x://u:***@h failed publishing: OSError") == (type(other), str(other))


def test_merged_lanes_come_by_time_each_in_its_own_order() -> None:
    """merge_lanes interleaves lanes by key, and never reorders a lane, even where its keys
    run backwards."""
    lanes = [[("a", 1.0), ("a", 3.0), ("a", 2.0)], [("b", 0.5), ("b", 2.5)], [("c", 9.0)]]
    merged = merge_lanes(lanes, key=lambda item: item[1])
    assert ["b", "a", "b", "a", "a", "c"] == [lane for lane, _ in merged]
    for lane in lanes:
        assert lane == [item for item in merged if item[0] == lane[0][0]]


def _key(item: tuple[str, float]) -> float:
    return item[1]


def test_a_lane_behind_holds_the_later_items_of_the_others() -> None:
    """Horizon releases items by key only up to the latest key of every lane with more to
    come; the rest waits, in its lane's order, and comes once that lane catches up."""
    horizon: Horizon[str, tuple[str, float]] = Horizon(_key)
    horizon.add("a", [("a", 1.0), ("a", 2.0)], more=True)
    horizon.add("b", [("b", 0.5), ("b", 1.5), ("b", 2.5), ("b", 3.0)], more=False)
    first = horizon.release()
    horizon.add("a", [("a", 2.7), ("a", 4.0)], more=False)
    second = horizon.release()
    assert [("b", 0.5), ("a", 1.0), ("b", 1.5), ("a", 2.0)] == first
    assert [("b", 2.5), ("a", 2.7), ("b", 3.0), ("a", 4.0)] == second
    assert 0 == horizon.held


def test_a_lane_known_to_be_behind_holds_the_others_before_its_first_item() -> None:
    """A lane said to be behind before anything of it came holds every other lane back;
    one caught up (or forgotten) holds nobody."""
    horizon: Horizon[str, tuple[str, float]] = Horizon(_key)
    horizon.behind("a")
    horizon.add("b", [("b", 1.0)], more=False)
    held = horizon.release()
    horizon.behind("a", more=False)
    assert ([], [("b", 1.0)]) == (held, horizon.release())
    horizon.behind("c")
    horizon.add("b", [("b", 2.0)], more=False)
    assert [] == horizon.release()
    assert [] == horizon.drop("c")
    assert [("b", 2.0)] == horizon.release()


def test_a_limited_release_keeps_the_rest_in_lane_order() -> None:
    """release(limit) hands out the earliest ``limit`` items; the others stay held and come
    next, each lane's order kept even where its keys run backwards."""
    horizon: Horizon[str, tuple[str, float]] = Horizon(_key)
    horizon.add("a", [("a", 1.0), ("a", 3.0), ("a", 2.0)], more=False)
    horizon.add("b", [("b", 0.5), ("b", 2.5)], more=False)
    assert [("b", 0.5), ("a", 1.0)] == horizon.release(2)
    assert 3 == horizon.held
    assert [("b", 2.5), ("a", 3.0), ("a", 2.0)] == horizon.release()


def test_a_limited_release_of_ascending_lanes_keeps_the_rest_in_lane_order() -> None:
    """The same with every lane's keys ascending, equal keys across lanes among them: what
    is held back goes back to the lane it came from, before what that lane still held."""
    horizon: Horizon[str, tuple[str, float]] = Horizon(_key)
    horizon.add("a", [("a", 1.0), ("a", 2.0), ("a", 4.0)], more=False)
    horizon.add("b", [("b", 1.0), ("b", 2.0), ("b", 3.0)], more=False)
    assert [("a", 1.0), ("b", 1.0), ("a", 2.0)] == horizon.release(3)
    horizon.add("a", [("a", 5.0)], more=False)
    assert [("b", 2.0), ("b", 3.0), ("a", 4.0), ("a", 5.0)] == horizon.release()
    assert 0 == horizon.held


class _Opaque:
    """An item that refuses every comparison (a record, an event)."""

    def __init__(self, name: str, moment: float) -> None:
        self.name, self.moment = name, moment

    def __lt__(self, other: object) -> bool:
        raise AssertionError("items were compared")


@pytest.mark.parametrize(
    ("a2", "expected"),
    [
        (1.0, ["b1", "b2", "a1", "a2", "c1"]),  # every lane's keys ascend
        (0.5, ["b1", "b2", "a1", "a2", "c1"]),  # one lane's keys run backwards
        (2.0, ["b1", "b2", "a1", "c1", "a2"]),
    ],
)
def test_equal_keys_come_lane_by_lane_and_items_are_never_compared(
    a2: float, expected: list[str]
) -> None:
    """Items of several lanes with one key come in the order their lanes were first added,
    each lane's order kept, and the merge never compares two items."""
    horizon: Horizon[str, _Opaque] = Horizon(lambda item: item.moment)
    horizon.add("b", [_Opaque("b1", 1.0), _Opaque("b2", 1.0)], more=False)
    horizon.add("a", [_Opaque("a1", 1.0), _Opaque("a2", a2)], more=False)
    horizon.add("c", [_Opaque("c1", 1.0)], more=False)
    assert expected == [item.name for item in horizon.release()]


def test_nothing_is_held_longer_than_the_hold_limit() -> None:
    """A lane that says it has more but sends nothing holds the others for ``hold_limit``
    seconds at most."""
    horizon: Horizon[str, tuple[str, float]] = Horizon(_key, hold_limit=0.0)
    horizon.behind("a")
    horizon.add("b", [("b", 1.0)], more=False)
    assert 0.0 == horizon.waiting()
    assert [("b", 1.0)] == horizon.release()
    assert horizon.waiting() is None


def test_an_untimed_event_counts_as_early() -> None:
    """event_time is the event's epoch seconds, and early for an event without a time or an
    undecodable one."""
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    timed = Event(type="t", source="s", time=moment)
    untimed = Event(type="t", source="s").replace(time=None)
    assert moment.timestamp() == event_time(timed)
    assert event_time(None) == event_time(untimed) < event_time(timed)
