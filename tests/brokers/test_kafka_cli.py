"""The CLI on Kafka as an operator meets it: reads leave the cluster as they found it."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tests.test_cli import choreo

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
