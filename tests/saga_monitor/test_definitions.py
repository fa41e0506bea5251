"""Saga definitions: the YAML shape of DESIGN.md, the Python model, and errors by line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from saga_monitor import DefinitionError, SagaDefinition, Step, load_definitions, parse_definitions
from saga_monitor.definitions import format_duration, parse_duration
from tests.saga_monitor.helpers import event, example


def test_example_matches_design() -> None:
    """The shipped example is DESIGN.md's order-fulfilment saga, with its topics."""
    definitions = example()
    saga = definitions.get("order-fulfilment")
    assert ("orders", "payments", "inventory", "shipping") == definitions.all_topics
    assert ("order.placed",) == saga.start
    assert [
        Step("payment.authorized", 30.0, "payment.refunded"),
        Step("inventory.reserved", 30.0, "inventory.released"),
        Step("order.shipped", 7200.0, None),
    ] == list(saga.steps)
    assert (("order.shipped",), ("payment.failed", "inventory.unavailable")) == (
        saga.complete,
        saga.fail,
    )
    assert (("order.cancelled",), 86400.0) == (saga.compensated, saga.deadline)


def test_python_model_equals_the_yaml_model() -> None:
    """The same saga built in Python compares equal to the one read from YAML."""
    built = SagaDefinition(
        name="order-fulfilment",
        start=["order.placed"],
        steps=[
            Step("payment.authorized", within="30s", compensation="payment.refunded"),
            Step("inventory.reserved", within="30s", compensation="inventory.released"),
            Step("order.shipped", within="2h"),
        ],
        complete=["order.shipped"],
        fail=["payment.failed", "inventory.unavailable"],
        compensated=["order.cancelled"],
        deadline="1d",
        compensation_within="5m",
    )
    assert example().get("order-fulfilment") == built


def test_per_saga_topics_add_to_the_top_level_ones() -> None:
    """The monitor subscribes to the top-level topics plus each saga's own."""
    text = "topics: [a]\nsagas:\n  - name: s\n    topics: [b, a]\n    start: x\n    complete: y\n"
    assert ("a", "b") == parse_definitions(text).all_topics


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "sagas:\n  - name: s\n    start: [a]\n    steps:\n      - event: b\n"
            "        within: 3x\n",
            "f.yaml:6: sagas[0].steps[0].within: '3x' is not a duration",
        ),
        (
            "sagas:\n  - name: s\n    strat: [a]\n",
            "f.yaml:3: sagas[0]: unknown field 'strat'; did you mean 'start'?",
        ),
        (
            "sagas:\n  - name: s\n    start: [a]\n    complete: [z]\n    fail: [a]\n",
            "f.yaml:5: sagas[0].fail: a is both a start and a fail event",
        ),
        ("sagas:\n  - start: [a]\n", "f.yaml:2: sagas[0]: missing required field 'name'"),
        ("sagas: [\n", "f.yaml:2: not valid YAML"),
        ("", "f.yaml: the file is empty"),
        (
            "sagas:\n  - name: s\n    start: a\n    complete: z\n    correlation: 'data.a['\n",
            "f.yaml:5: sagas[0].correlation: '$.a[' is not a valid JSONPath",
        ),
        (
            "sagas:\n  - name: s\n    start: a\n    complete: z\n    correlation: Order Id\n",
            "f.yaml:5: sagas[0].correlation: 'Order Id' is not understood",
        ),
        (
            "sagas:\n  - {name: s, start: a, complete: z}\n  - {name: s, start: a, complete: z}\n",
            "f.yaml:2: sagas: the name s is used more than once",
        ),
        (
            "sagas:\n  - name: s\n    start: a\n    steps: [b, c, b]\n",
            "f.yaml:4: sagas[0].steps: b appears more than once",
        ),
        ("sagas:\n  - name: s\n    start: a\n", "f.yaml:2: sagas[0]: saga 's' needs a complete"),
    ],
)
def test_invalid_yaml_names_line_and_field(text: str, message: str) -> None:
    """Each mistake gives one message starting with file:line: field."""
    with pytest.raises(DefinitionError) as caught:
        parse_definitions(text, file="f.yaml")
    assert str(caught.value).startswith(message), str(caught.value)


def test_missing_file_is_one_clear_error(tmp_path: Path) -> None:
    """A definitions path that does not exist names the path."""
    with pytest.raises(DefinitionError, match="cannot read saga definitions"):
        load_definitions(tmp_path / "nope.yaml")


def test_complete_defaults_to_the_last_step() -> None:
    """A saga without `complete` completes on its last step."""
    assert ("c",) == SagaDefinition(name="s", start="a", steps=[Step("b"), Step("c")]).complete


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("100ms", 0.1),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1h30m", 5400.0),
        ("0.2s", 0.2),
        ("15", 15.0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    """Durations accept ms, s, m, h, d, combinations and bare seconds."""
    assert seconds == parse_duration(text)


def test_durations_render_short() -> None:
    """Durations print compactly for the CLI and the web page."""
    assert ["250ms", "30s", "1h30m", "1d"] == [format_duration(s) for s in (0.25, 30, 5400, 86400)]


def test_correlation_header_name_may_carry_dashes() -> None:
    """`header:x-order` finds the `xorder` extension (CloudEvents names are alphanumeric)."""
    saga = SagaDefinition(name="s", correlation="header:x-order", start="a", complete="z")
    assert "o9" == saga.correlation.extract(event("a", corr=None, xorder="o9"))
