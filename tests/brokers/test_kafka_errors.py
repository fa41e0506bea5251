"""Kafka errors and options: every aiokafka exception maps to a broker error, URLs name their
clients' options, and an unreachable broker is one clear line with the password masked."""

from __future__ import annotations

import inspect
import json
import ssl
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import errors as kerr

from broker import Bus
from broker.adapters.kafka import KafkaAdapter, translate_error
from broker.adapters.kafka.wire import encode_event, encode_events
from broker.envelope import KAFKA_PREFIXES, Event, new_event, to_binary
from broker.errors import (
    BrokerError,
    BrokerUnavailableError,
    CapabilityError,
    ConfigurationError,
    PublishTimeoutError,
)
from tests.helpers import Collector, eventually
from tests.servers.kafka import KafkaServer, free_port

pytestmark = pytest.mark.kafka


def all_kafka_errors() -> list[type[BaseException]]:
    """Every exception class aiokafka.errors defines."""
    return [
        obj
        for _, obj in inspect.getmembers(kerr, inspect.isclass)
        if issubclass(obj, BaseException) and obj.__module__ == kerr.__name__
    ]


@pytest.mark.parametrize("error", all_kafka_errors(), ids=lambda e: e.__name__)
def test_every_client_error_is_mapped(error: type[BaseException]) -> None:
    """Each aiokafka exception becomes a BrokerError whose message names the masked URL."""
    try:
        instance = error()
    except TypeError:
        instance = error("detail")
    mapped = translate_error(instance, "kafka://u:secret@h:9092", "publishing")
    assert isinstance(mapped, BrokerError)
    assert "secret" not in str(mapped)
    assert "kafka://u:***@h:9092" in str(mapped)


def test_connection_and_auth_errors_are_unavailable() -> None:
    """Unreachable brokers and refused credentials both say what to check."""
    unreachable = translate_error(kerr.KafkaConnectionError("refused"), "kafka://h:1", "connecting")
    refused = translate_error(kerr.SaslAuthenticationFailed(), "kafka://h:1", "connecting")
    timeout = translate_error(kerr.KafkaTimeoutError(), "kafka://h:1", "publishing")
    assert isinstance(unreachable, BrokerUnavailableError)
    assert isinstance(refused, BrokerUnavailableError)
    assert "sasl_plain_username" in str(refused)
    assert isinstance(timeout, PublishTimeoutError)


async def test_unreachable_broker_is_one_clear_line() -> None:
    """Connecting to a port where nothing listens raises BrokerUnavailableError, password masked."""
    url = f"kafka://user:hunter2@127.0.0.1:{free_port()}"
    with pytest.raises(BrokerUnavailableError) as caught:
        await Bus(url).start()
    message = str(caught.value)
    assert "hunter2" not in message
    assert f"kafka://user:***@127.0.0.1:{url.rsplit(':', 1)[1]}" in message
    assert "\n" not in message


def test_url_options_reach_the_clients_that_take_them() -> None:
    """Security options go to every client, consumer tuning only to consumers, prefixed ones
    to their client; several bootstrap hosts are kept in order."""
    adapter = KafkaAdapter(
        "kafka://h1:9092,h2?security_protocol=SASL_SSL&sasl_mechanism=PLAIN"
        "&sasl_plain_username=app&sasl_plain_password=pw&session_timeout_ms=6000"
        "&producer.linger_ms=5&partitions=3&idempotence=false",
        **{
            "security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN",
            "sasl_plain_username": "app", "sasl_plain_password": "pw",
            "session_timeout_ms": "6000", "producer.linger_ms": "5", "partitions": "3",
            "idempotence": "false",
        },
    )  # fmt: skip
    options = adapter._client_options
    assert ["h1:9092", "h2:9092"] == adapter._bootstrap
    assert {"producer", "consumer", "admin"} == set(options)
    assert all(o["sasl_plain_password"] == "pw" for o in options.values())
    assert all(isinstance(o["ssl_context"], ssl.SSLContext) for o in options.values())
    assert 6000 == options["consumer"]["session_timeout_ms"]
    assert "session_timeout_ms" not in options["producer"]
    assert 5 == options["producer"]["linger_ms"]
    assert (3, "false") == (adapter.settings.partitions, adapter.settings.idempotence)
    assert "pw" not in adapter.url


def test_credentials_in_the_url_mean_sasl_plain() -> None:
    """kafka://user:pass@host uses SASL/PLAIN with those credentials."""
    adapter = KafkaAdapter("kafka://app:pw@h1:9092")
    producer = adapter._client_options["producer"]
    assert ("SASL_PLAINTEXT", "app", "pw") == (
        producer["security_protocol"], producer["sasl_plain_username"],
        producer["sasl_plain_password"],
    )  # fmt: skip


@pytest.mark.parametrize(
    "options",
    [{"no_such_option": "1"}, {"acks": "0"}, {"session_timeout_ms": "soon"},
     {"idempotence": "maybe"}, {"producer.enable_auto_commit": "true"}],
    ids=["unknown", "reserved", "not-a-number", "bad-idempotence", "wrong-client"],
)  # fmt: skip
def test_bad_options_are_refused(options: dict[str, str]) -> None:
    """Unknown, reserved or mistyped options are a ConfigurationError naming the URL."""
    with pytest.raises(ConfigurationError, match="kafka://h:9092"):
        KafkaAdapter("kafka://h:9092", **options)


async def test_selective_purge_is_refused(kafka_url: str) -> None:
    """Kafka cannot delete single records, so purging by id is a CapabilityError."""
    async with Bus(kafka_url) as bus:
        assert not bus.capabilities.selective_delete
        with pytest.raises(CapabilityError, match="cannot lose single events"):
            await bus.adapter.purge("some.dlq", ["id-1"])


async def test_publish_many_fails_unencodable_events_alone_and_keeps_key_order(
    kafka_url: str,
) -> None:
    """In a list of keyed and keyless events, one whose key or data cannot be encoded fails
    alone with its error; every other event is stored once, each key's events in order."""
    topic = f"mixed-{uuid.uuid4().hex[:8]}"
    items: list[dict[str, Any]] = []
    for n in range(40):
        key = None if n % 3 == 0 else f"k{n % 4}"
        items.append(
            {"type": "t", "data": n} if key is None else {"type": "t", "data": n, "key": key}
        )
    items[5] = {"type": "t", "data": 5, "key": "k\udcff"}  # a lone surrogate: no UTF-8
    items[9] = {"type": "t", "data": {"bad": object()}}
    items[10] = {"type": "t", "data": {"bad": object()}, "key": "k2"}
    got = Collector()
    async with Bus(kafka_url, source="mixed") as bus:
        await bus.create_topic(topic, partitions=4)
        await bus.subscribe(topic, got, group="g", from_beginning=True)
        result = await bus.publish_many(topic, items)
        failed = [index for index, outcome in enumerate(result) if not outcome.ok]
        assert [5, 9, 10] == failed
        assert all(isinstance(result[i].error, (TypeError, ValueError)) for i in failed)
        await eventually(lambda: len(got.events) == 37, what="the 37 good events")
    expected = [n for n in range(40) if n not in failed]
    assert expected == sorted(event.data for event in got.events)
    for key in ("k1", "k2", "k3"):
        sent = [n for n in expected if items[n].get("key") == key]
        assert sent == [e.data for e in got.events if e.extensions.get("partitionkey") == key]


@pytest.mark.parametrize(
    "event",
    [
        Event(type="t", source="s"),
        Event(type="t", source="s", data=b"\x00\xff", datacontenttype="application/octet-stream",
              subject="a/b", dataschema="urn:x", time=None),
        Event(type="t", source="s", data={"ü": [1, 2]}, datacontenttype=None,
              extensions={"partitionkey": "k", "n": 3, "yes": True, "no": False}),
        Event(type="t", source="s", data="text", datacontenttype="text/plain",
              extensions={"partitionkey": 7}),
    ],
    ids=["minimal", "binary", "extensions", "text"],
)  # fmt: skip
def test_publish_encoding_is_the_envelope_binding(event: Event) -> None:
    """The adapter's fast encoder writes exactly the envelope's binary binding (``ce_``
    headers as UTF-8, the partition key as the record key)."""
    headers, body = to_binary(event, KAFKA_PREFIXES[0])
    key = event.partitionkey
    expected = (
        None if key is None else key.encode(),
        [(name, value.encode()) for name, value in headers.items()],
        body,
    )
    assert expected == encode_event(event)


def test_a_list_encodes_as_its_events_do_one_by_one() -> None:
    """The list encoder gives each event the record encode_event gives it (shared headers
    found once per run of events sharing them), and an event whose data JSON cannot hold or
    whose key UTF-8 cannot hold fails alone, wherever it sits in a run."""
    at = datetime.now(UTC)
    run = [new_event("t", "s", {"n": n}, None, {"traceparent": f"tp{n}"}, at) for n in range(4)]
    run[1].extensions["partitionkey"] = "k1"
    run[2].extensions["partitionkey"] = "k\udcff"  # a lone surrogate
    run[3].data = {"bad": object()}
    events = [
        *run,
        Event(type="t", source="s", subject="sub", data=b"x", datacontenttype="a/b"),
        new_event("t", "s", 5, None, {"n": 5, "yes": True}, at),
        new_event("t", "s", 6, None, None, at),
        Event(type="\ud800", source="s"),
        new_event("t2", "s", 8, None, None, at),
    ]
    errors: dict[int, Exception] = {}
    records = encode_events(events, errors)
    assert [2, 3, 7] == sorted(errors)
    for index, event in enumerate(events):
        if index not in errors:
            assert encode_event(event) == records[index]
    assert [index in errors for index in range(len(events))] == [r is None for r in records]


def test_a_list_sharing_values_encodes_as_its_events_do_one_by_one() -> None:
    """Events of a list that share extension values and data objects (one traceparent per
    publish_many call, one payload) get the records encode_event gives each, also where the
    same data object comes back under another content type or after being changed."""
    at = datetime.now(UTC)
    trace, payload, text = "00-" + "1" * 32 + "-" + "2" * 16 + "-01", {"n": [1]}, "same"
    shared = {"traceparent": trace, "partitionkey": "k"}
    events = [new_event("t", "s", payload, None, dict(shared), at) for _ in range(3)]
    events += [new_event("t", "s", text, None, dict(shared), at) for _ in range(2)]
    events.append(Event(type="t", source="s", data=text, datacontenttype="text/plain", time=at))
    events.append(new_event("t", "s", text, None, {"traceparent": trace, "flag": True}, at))
    errors: dict[int, Exception] = {}
    first = encode_events(events, errors)
    payload["n"].append(2)  # a later call sees the object as it is then
    again = encode_events(events, errors)
    assert {} == errors
    assert [encode_event(event) for event in events] == again
    assert first[0] != again[0]


async def test_required_idempotence_refused_by_the_broker(
    kafka_server: KafkaServer | None, kafka_url: str
) -> None:
    """idempotence=true fails in one line on a broker that refuses idempotent producers (Tansu),
    where the default (auto) publishes without it."""
    if kafka_server is None:
        pytest.skip("an external Kafka grants idempotent producers")
    with pytest.raises(ConfigurationError, match="refused an idempotent producer"):
        await Bus(f"{kafka_url}&idempotence=true").start()
    async with Bus(kafka_url) as bus:
        await bus.publish(f"idem-{uuid.uuid4().hex[:8]}", type="t")


def test_cli_publish_over_the_max_request_size_is_one_line(kafka_url: str, tmp_path: Path) -> None:
    """`choreo publish` of data over the producer's max_request_size exits 1 with one error
    line naming the broker and the cause, not a traceback."""
    data = tmp_path / "big.json"
    data.write_text(json.dumps({"blob": "x" * 40_000}))
    url = f"{kafka_url}&max_request_size=20000"
    topic = f"contract-big-{uuid.uuid4().hex[:8]}"
    run = subprocess.run(
        [sys.executable, "-m", "choreo", "publish", topic, "-t", "t", "-d", f"@{data}", "-b", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (1, "", False) == (run.returncode, run.stdout, "Traceback" in run.stderr)
    [error] = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert "MessageSizeTooLargeError" in error  # (Tansu adds a log line on idempotence)
