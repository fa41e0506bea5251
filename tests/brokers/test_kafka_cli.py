"""The CLI on Kafka as an operator meets it: reads leave the cluster as they found it, and
warnings hold on a cluster with many groups."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from broker import Bus
from tests.saga_monitor.test_cli import DEMO_SAGAS
from tests.test_cli import CHOREO, choreo

pytestmark = pytest.mark.kafka


def test_reading_a_misspelt_topic_does_not_create_it(kafka_url: str, tmp_path: Path) -> None:
    """`dlq ls` and `saga discover` of a topic the cluster lacks find nothing and leave no topic
    of that name behind (a metadata request naming it would have created it)."""
    typo = f"oders-{uuid.uuid4().hex[:8]}"
    listed = choreo("dlq", "ls", typo, "--output", "json", "-b", kafka_url, cwd=tmp_path)
    found = choreo("saga", "discover", "--topic", typo, "-b", kafka_url, cwd=tmp_path)
    topics = choreo("topics", "ls", "--output", "json", "-b", kafka_url, cwd=tmp_path)
    assert (0, "[]", 1, 0) == (
        listed.returncode,
        listed.stdout.strip(),
        found.returncode,
        topics.returncode,
    ), listed.stderr + found.stderr + topics.stderr
    names = {t["name"] for t in json.loads(topics.stdout)}
    assert set() == {typo, f"{typo}.dlq"} & names


async def _commit_offsets(url: str, topic: str, groups: list[str]) -> None:
    """Give each of ``groups`` (under the URL's ``group_prefix``) a committed offset in
    ``topic``, as a consumer of that group that read it would have."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.structs import OffsetAndMetadata

    parts = urlsplit(url)
    prefix = parse_qs(parts.query).get("group_prefix", [""])[0]
    async with Bus(url) as bus:
        await bus.create_topic(topic, partitions=1)
    partition = TopicPartition(topic, 0)
    for group in groups:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=parts.netloc, group_id=prefix + group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            consumer.assign([partition])
            await consumer.commit({partition: OffsetAndMetadata(0, "")})
        finally:
            await consumer.stop()


def test_monitor_from_beginning_warns_among_hundreds_of_groups(
    kafka_url: str, tmp_path: Path
) -> None:
    """`saga monitor --from-beginning` warns that its group already read the topics also when
    the cluster holds over 200 groups and its name sorts after the first 200 (they were the
    only ones asked, so the warning was silently lost and topics ls left the group out)."""
    topic = f"orders-{uuid.uuid4().hex[:8]}"
    groups = [f"g{i:03d}" for i in range(201)]
    asyncio.run(_commit_offsets(kafka_url, topic, groups))
    definitions = tmp_path / "sagas.yaml"
    definitions.write_text(
        f"topics: [{topic}]\nsagas:\n  - name: s\n    start: [a]\n"
        "    steps:\n      - event: b\n        within: 30s\n"
    )
    monitor = subprocess.Popen(
        [*CHOREO, "saga", "monitor", "-d", str(definitions), "--group", groups[-1],
         "--from-beginning", "-b", kafka_url, "-s", f"sqlite:///{tmp_path}/s.db"],
        stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        assert monitor.stderr is not None
        lines = [monitor.stderr.readline()]
        while not lines[-1].startswith(("watching", "warning: group", "error")) and lines[-1]:
            lines.append(monitor.stderr.readline())  # Tansu's idempotence line may come first
        monitor.send_signal(signal.SIGINT)
        assert 0 == monitor.wait(timeout=60)
    finally:
        monitor.kill()
    warning = f"warning: group '{groups[-1]}' already reads {topic}: --from-beginning "
    assert lines[-1].startswith(warning), lines


def test_a_port_that_does_not_speak_kafka_is_one_line_in_bounded_time(tmp_path: Path) -> None:
    """A host and port that accept connections but never answer the Kafka protocol (another
    service) fail after connect_timeout_ms with one line saying so, not after aiokafka's 40 s
    request timeout."""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (backlog), never answers
        url = f"kafka://127.0.0.1:{silent.getsockname()[1]}?connect_timeout_ms=1000"
        store = f"sqlite:///{tmp_path}/s.db"
        for args in (
            ["dlq", "ls", "orders"],
            ["saga", "monitor", "-d", str(DEMO_SAGAS), "-s", store],
        ):
            run = choreo(*args, "-b", url, cwd=tmp_path)
            lines = run.stderr.splitlines()
            assert (1, 1) == (run.returncode, len(lines)), lines
            assert "no answer within 1000 ms" in lines[0], lines
