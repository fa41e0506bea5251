"""Request/reply over the bus (DESIGN.md, delivery semantics), pinned on every backend."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from broker import Bus, Event, Policy, Retry
from broker.errors import RequestFailedError, RequestTimeoutError
from tests.conftest import SERVER_MODULES
from tests.helpers import eventually

#: Requests wait this long in tests: generous, since a networked group join can take seconds.
TIMEOUT = 30.0
ONE_ATTEMPT = Policy(retry=Retry(max_attempts=1))


async def _doubler(event: Event) -> object:
    return {"double": event.data["n"] * 2}


async def test_a_handlers_return_value_is_the_reply(
    make_bus: Callable[..., Bus], topic: str
) -> None:
    """request() returns the reply event: the handler's value as data, the request's id as
    causation, its correlation id carried over."""
    responder = await make_bus(source="calculator").start()
    requester = await make_bus(source="client").start()
    requests: list[Event] = []

    async def double(event: Event) -> object:
        requests.append(event)
        return await _doubler(event)

    await responder.subscribe(topic, double, group="calculator")
    reply = await requester.request(
        topic, type="calc.double", data={"n": 21}, correlation_id="c-1", timeout=TIMEOUT
    )
    assert [requests[0].id] == [reply.causationid]
    assert str(requests[0].extensions["replyto"]).startswith("_reply.")
    assert {"double": 42} == reply.data
    assert ("calc.double.reply", "calculator", "c-1") == (
        reply.type,
        reply.source,
        reply.correlationid,
    )
    assert reply.extensions.get("replyerror") is None


async def test_concurrent_requests_get_their_own_replies(
    make_bus: Callable[..., Bus], topic: str
) -> None:
    """Twenty requests in flight at once each get the reply to themselves."""
    responder = await make_bus().start()
    requester = await make_bus().start()
    await responder.subscribe(topic, _doubler, group="calculator")
    replies = await asyncio.gather(
        *(requester.request(topic, type="calc", data={"n": n}, timeout=TIMEOUT) for n in range(20))
    )
    assert [{"double": 2 * n} for n in range(20)] == [reply.data for reply in replies]
    assert len({reply.causationid for reply in replies}) == 20


async def test_a_returned_event_is_sent_as_the_reply(
    make_bus: Callable[..., Bus], topic: str
) -> None:
    """A handler that returns an Event replies with it, caused by the request."""
    responder = await make_bus(source="stock").start()
    requester = await make_bus().start()

    async def answer(event: Event) -> Event:
        return Event(type="stock.level", source="stock", data={"sku": event.data, "level": 3})

    await responder.subscribe(topic, answer, group="stock")
    reply = await requester.request(topic, type="stock.query", data="a-1", timeout=TIMEOUT)
    assert ("stock.level", {"sku": "a-1", "level": 3}) == (reply.type, reply.data)
    assert reply.causationid is not None


async def test_a_failing_handler_sends_an_error_reply(
    make_bus: Callable[..., Bus], topic: str
) -> None:
    """When the handler's attempts run out the requester gets an error reply (raised as
    RequestFailedError naming the error), not silence; the request is dead-lettered too."""
    responder = await make_bus(policy=ONE_ATTEMPT).start()
    requester = await make_bus().start()

    async def broken(event: Event) -> object:
        raise ValueError(f"no stock for {event.data}")

    await responder.subscribe(topic, broken, group="stock")
    with pytest.raises(RequestFailedError) as failure:
        await requester.request(topic, type="stock.reserve", data="a-1", timeout=TIMEOUT)
    reply = failure.value.reply
    assert isinstance(reply, Event)
    assert "ValueError: no stock for a-1" == reply.extensions["replyerror"]
    assert "stock.reserve.error" == reply.type
    assert "ValueError: no stock for a-1" in str(failure.value)


async def test_no_reply_in_time_raises_a_timeout(make_bus: Callable[..., Bus], topic: str) -> None:
    """A request nobody answers raises RequestTimeoutError (a TimeoutError) after its timeout."""
    requester = await make_bus().start()
    started = time.monotonic()
    with pytest.raises(RequestTimeoutError, match=f"on {topic} within 1s") as failure:
        await requester.request(topic, type="nobody.home", timeout=1.0)
    assert isinstance(failure.value, TimeoutError)
    assert time.monotonic() - started >= 1.0


# -- across processes ------------------------------------------------------------------------

SHARED_BACKENDS = ["sqlite", *SERVER_MODULES]  # memory:// lives in one process


@pytest.fixture(
    params=[pytest.param(name, marks=getattr(pytest.mark, name)) for name in SHARED_BACKENDS]
)
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A broker URL that several processes can share."""
    name = request.param
    if name == "sqlite":
        return f"sqlite:///{tmp_path}/broker.db?visibility_timeout=3&poll_interval=0.01"
    url: str = request.getfixturevalue(f"{name}_url")
    return url


@pytest.fixture
async def responder(shared_url: str) -> AsyncIterator[tuple[Bus, str]]:
    """A library responder on a fresh topic: doubles ``n``, fails on ``fail``."""
    topic = f"rr-{uuid.uuid4().hex[:12]}"

    async def handle(event: Event) -> object:
        if event.data.get("fail"):
            raise RuntimeError("asked to fail")
        return {"double": event.data["n"] * 2}

    async with Bus(shared_url, source="calculator", policy=ONE_ATTEMPT) as bus:
        await bus.subscribe(topic, handle, group="calculator")
        yield bus, topic


async def _choreo(*args: str, cwd: Path) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "choreo",
        *args,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_cli_request_gets_a_library_reply(
    responder: tuple[Bus, str], shared_url: str, tmp_path: Path
) -> None:
    """`choreo request` in another process prints the reply of a library handler."""
    _, topic = responder
    code, out, err = await _choreo(
        "request", topic, "--type", "calc", "--data", '{"n": 4}', "--timeout", "60s",
        "--output", "json", "--broker", shared_url, cwd=tmp_path,
    )  # fmt: skip
    assert 0 == code, err
    reply = json.loads(out)
    assert ({"double": 8}, "calc.reply") == (reply["data"], reply["type"])


async def test_cli_request_prints_an_error_reply_and_exits_1(
    responder: tuple[Bus, str], shared_url: str, tmp_path: Path
) -> None:
    """An error reply makes `choreo request` exit 1 with the handler's error on one line."""
    _, topic = responder
    code, out, err = await _choreo(
        "request", topic, "--type", "calc", "--data", '{"fail": true}', "--timeout", "60s",
        "--broker", shared_url, cwd=tmp_path,
    )  # fmt: skip
    assert (1, "") == (code, out)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert 1 == len(errors)
    assert "RuntimeError: asked to fail" in errors[0]


async def test_a_cli_reply_handler_answers_a_library_request(
    shared_url: str, tmp_path: Path
) -> None:
    """`choreo subscribe --exec CMD --reply` sends CMD's stdout back as the reply's data."""
    topic = f"rr-{uuid.uuid4().hex[:12]}"
    script = tmp_path / "handler.py"
    script.write_text(
        "import json, sys\n"
        "event = json.load(sys.stdin)\n"
        "print(json.dumps({'seen': event['data'], 'type': event['type']}))\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "choreo", "subscribe", topic, "--group", "cli-responder",
        "--exec", f"{sys.executable} {script}", "--reply", "--broker", shared_url,
        cwd=tmp_path, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with Bus(shared_url) as bus:
            reply = await _first_reply(bus, topic)
    finally:
        process.terminate()
        await process.wait()
    assert {"seen": {"n": 1}, "type": "calc"} == reply.data


async def _first_reply(bus: Bus, topic: str) -> Event:
    """Ask until the subscriber process has joined (a request sent before is not seen)."""
    deadline = time.monotonic() + 90
    while True:
        try:
            return await bus.request(topic, type="calc", data={"n": 1}, timeout=3)
        except RequestTimeoutError:
            if time.monotonic() > deadline:
                raise


async def test_a_stopped_requester_deletes_its_reply_topic(
    make_bus: Callable[..., Bus], topic: str
) -> None:
    """Stopping a bus that made requests deletes its reply topic from the broker."""
    responder = await make_bus().start()
    requests: list[Event] = []

    async def record(event: Event) -> None:
        requests.append(event)

    await responder.subscribe(topic, record, group="calculator")
    requester = await make_bus().start()
    await requester.request(topic, type="calc", timeout=TIMEOUT)
    reply_topic = str(requests[0].extensions["replyto"])
    assert reply_topic in {info.name for info in await responder.adapter.list_topics()}
    assert reply_topic not in {info.name for info in await responder.topics()}
    await requester.stop()

    async def gone() -> bool:
        return reply_topic not in {info.name for info in await responder.adapter.list_topics()}

    await eventually(gone, what="the reply topic to be deleted")
