"""The NATS header block ``publish_many`` writes itself is byte for byte what nats-py's
``Client.publish`` writes for the same headers, for the events ``publish_many`` stamps (a new
trace, no other extension: the short path) and for ids and traces nats-py would clean."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from broker import Event
from broker.adapters.nats.wire import encode, encode_block
from broker.context import new_traceparent
from broker.envelope import ExtensionValue, new_event

_NEWLINES = str.maketrans({"\r": " ", "\n": " "})
_AT = datetime(2026, 12, 1, 20, 0, tzinfo=UTC)


def _nats_py_block(headers: dict[str, str]) -> bytes:
    """What nats-py 2.x writes for ``headers`` (``Client.publish``: each name and value
    stripped, line breaks in a value turned to spaces)."""
    lines = "".join(
        f"{name.strip()}: {value.strip().translate(_NEWLINES)}\r\n"
        for name, value in headers.items()
    )
    return f"NATS/1.0\r\n{lines}\r\n".encode()


def _in_block_order(event: Event, extra: dict[str, str]) -> dict[str, str]:
    """``encode``'s headers in the order ``encode_block`` writes them (NATS headers carry no
    order): the attributes a list shares, then ``ce-id``, the extensions, ``Nats-Msg-Id``."""
    headers, _ = encode(event)
    own = ["ce-id", *(f"ce-{name}" for name in event.extensions), "Nats-Msg-Id"]
    ordered = {name: value for name, value in headers.items() if name not in own}
    return ordered | {name: headers[name] for name in own} | extra


@pytest.mark.parametrize(
    ("ident", "trace"),
    [
        ("0f40214d-a130-419e-8012-9d6669f0c100", None),
        ("order-1", "00-62135487dbe48add5e7e1d4def7bffa5-0461f3d00d5076dd-01"),
        ("a:  b", None),
        ("caf\u00e9", "t\u00e9"),
        ("id ", None),
        ("id\tx", None),
        ("id\x0bx", None),
        ("id", "trace\x0cx"),
        ("id", "two\r\nlines"),
        ("id", " "),
    ],
)
@pytest.mark.parametrize("ttl_line", ["", "Nats-TTL: 5\r\n"])
def test_a_block_is_what_nats_py_writes(ident: str, trace: str | None, ttl_line: str) -> None:
    extensions: dict[str, ExtensionValue] = {"traceparent": trace or new_traceparent()}
    event = dataclasses.replace(
        new_event("bench", "bench", {"n": 1}, None, extensions, _AT), id=ident
    )
    encoded = encode_block(event, ttl_line)
    headers = _in_block_order(event, {"Nats-TTL": "5"} if ttl_line else {})
    if encoded is not None:  # written by choreograph: exactly nats-py's bytes
        assert encoded[0] == _nats_py_block(headers)
        assert encoded[1] == encode(event)[1]
    else:  # left to nats-py, which cleans it
        assert not all(v.isprintable() and v and v.strip() == v for v in headers.values())


def test_publish_many_events_take_the_short_path() -> None:
    events = [
        new_event("bench", "bench", "x" * 254, None, {"traceparent": new_traceparent()}, _AT)
        for _ in range(3)
    ]
    blocks = [encode_block(event) for event in events]
    assert all(block is not None for block in blocks)
    for event, block in zip(events, blocks, strict=True):
        assert block is not None
        assert block[0] == _nats_py_block(_in_block_order(event, {}))
