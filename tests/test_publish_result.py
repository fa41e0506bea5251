"""What publish_many returns: one outcome per event, in order, whether it was built from
outcomes or from the events and their errors side by side."""

from __future__ import annotations

import pytest

from broker import Event, Outcome, PublishError, PublishResult


def _events(count: int) -> list[Event]:
    return [Event(type="t", source="s", data=n) for n in range(count)]


def test_a_result_of_events_and_errors_reads_as_its_outcomes() -> None:
    """PublishResult.of pairs each event with its error: indexing, iteration, ok, published
    and failed read as they do for the same outcomes given one by one."""
    events = _events(4)
    boom = ValueError("boom")
    errors: list[Exception | None] = [None, boom, None, None]
    made = PublishResult.of("topic", events, errors)
    given = PublishResult("topic", [Outcome(e, x) for e, x in zip(events, errors, strict=True)])
    for result in (made, given):
        assert 4 == len(result)
        assert list(given) == list(result)
        assert Outcome(events[1], boom) == result[1]
        assert [Outcome(events[1], boom)] == result.failed
        assert [events[0], events[2], events[3]] == result.published
        assert not result.ok
        assert "3 of 4 published" in repr(result)
        with pytest.raises(PublishError, match="1 of 4 events were not published"):
            result.raise_for_failures()


def test_a_result_where_every_event_went_through() -> None:
    """A list that all went through is ok, publishes every event in order and fails none."""
    events = _events(3)
    result = PublishResult.of("topic", events, [None] * 3)
    assert result.ok
    assert events == result.published
    assert [] == result.failed
    assert [Outcome(e) for e in events] == list(result)
    result.raise_for_failures()


def test_a_result_needs_one_error_slot_per_event() -> None:
    """Events and errors of different lengths are refused, not paired short."""
    with pytest.raises(ValueError, match="3 events but 2 outcomes"):
        PublishResult.of("topic", _events(3), [None, None])
