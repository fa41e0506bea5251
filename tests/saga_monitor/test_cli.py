"""``choreo saga ...``: listings for scripts, the timeline view, one-line errors and exit codes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from broker import Bus
from choreo.cli import app
from saga_monitor import open_saga_store
from tests.saga_monitor.helpers import populate, stuck_again, traceparent_of
from tests.saga_monitor.test_discovery import traffic
from tests.saga_monitor.test_web import _free_port
from tests.test_cli import choreo, choreo_into_a_closed_pipe

runner = CliRunner()
#: The sagas `choreo demo` watches.
DEMO_SAGAS = Path(__file__).resolve().parents[2] / "choreo" / "demo_sagas.yaml"


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    """A SQLite store with a completed, a compensated, a failed and a stuck order."""
    url = f"sqlite:///{tmp_path}/sagas.db"
    store = open_saga_store(url)
    populate(store)
    store.close()
    return url


def test_ls_json_has_the_fields_scripts_rely_on(store_url: str) -> None:
    """`saga ls -o json` is an array with the fields scripts rely on, one object per instance."""
    result = runner.invoke(app, ["saga", "ls", "--store", store_url, "--output", "json"])
    assert 0 == result.exit_code, result.output
    rows = json.loads(result.stdout)
    fields = {"saga", "correlation_id", "state", "started", "updated", "expected_next", "anomalies"}
    assert all(fields <= set(row) for row in rows)
    assert {
        "order-ok": "completed",
        "order-comp": "compensated",
        "order-fail": "failed",
        "order-stuck": "stuck",
    } == {r["correlation_id"]: r["state"] for r in rows}


def test_ls_filters_by_state_saga_and_since(store_url: str) -> None:
    """--state, --saga and --since narrow the listing."""

    def ids(*args: str) -> list[str]:
        result = runner.invoke(app, ["saga", "ls", "--store", store_url, "-o", "json", *args])
        assert 0 == result.exit_code, result.output
        return [row["correlation_id"] for row in json.loads(result.stdout)]

    assert ["order-stuck"] == ids("--state", "stuck")
    assert ["order-stuck"] == ids("--saga", "order-fulfilment", "--state", "stuck")
    assert ["order-stuck"] == ids("--since", "30s")


def test_ls_table_shows_counts(store_url: str) -> None:
    """The table ends with the counts by state."""
    result = runner.invoke(app, ["saga", "ls", "--store", store_url])
    assert 0 == result.exit_code, result.output
    assert "1 compensated, 1 completed, 1 failed, 1 stuck" in result.stdout


def test_show_renders_the_timeline_with_expectation_and_anomalies(store_url: str) -> None:
    """`saga show ID` prints each event, what is expected next, and the anomalies."""
    result = runner.invoke(
        app, ["saga", "show", "order-stuck", "--store", store_url], env={"COLUMNS": "160"}
    )
    assert 0 == result.exit_code, result.output
    for text in (
        "payment.authorized",
        "expected next: inventory.reserved",
        "overdue by",
        "⚠ duplicate",
    ):
        assert text in result.stdout


def test_show_gives_each_events_trace_id(store_url: str) -> None:
    """The timeline names each event's trace id (from its traceparent), in the table and in
    the JSON."""
    trace = traceparent_of("order-ok")[3:35]
    shown = runner.invoke(
        app, ["saga", "show", "order-ok", "--store", store_url], env={"COLUMNS": "240"}
    )
    assert 0 == shown.exit_code, shown.output
    assert 4 == shown.stdout.count(trace)
    result = runner.invoke(app, ["saga", "show", "order-ok", "--store", store_url, "-o", "json"])
    (instance,) = json.loads(result.stdout)
    assert [trace] * 4 == [entry["trace"] for entry in instance["timeline"]]


def test_show_json_is_the_full_instance(store_url: str) -> None:
    """`saga show ID -o json` gives the timeline with data, as stored."""
    result = runner.invoke(app, ["saga", "show", "order-comp", "--store", store_url, "-o", "json"])
    assert 0 == result.exit_code, result.output
    (instance,) = json.loads(result.stdout)
    assert ("compensated", 6) == (instance["state"], len(instance["timeline"]))


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["saga", "show", "nope"], 1, "no saga instance with correlation id 'nope'"),
        (["saga", "ls", "--state", "stuk"], 2, "--state 'stuk' is not a saga state"),
        (["saga", "ls", "--since", "soon"], 2, "'soon' is not a duration"),
    ],
)
def test_mistakes_are_one_line_with_exit_codes(
    store_url: str, args: list[str], code: int, message: str
) -> None:
    """User mistakes give exit 2, operational failures exit 1, never a traceback."""
    result = runner.invoke(app, [*args, "--store", store_url])
    assert (code, True) == (result.exit_code, message in result.output), result.output
    assert "Traceback" not in result.output


def test_monitor_with_a_broken_definitions_file_names_file_and_line(tmp_path: Path) -> None:
    """A YAML mistake stops `saga monitor` with file:line: field and exit 2."""
    bad = tmp_path / "sagas.yaml"
    bad.write_text("sagas:\n  - name: s\n    start: a\n    complete: z\n    deadline: soon\n")
    result = runner.invoke(
        app, ["saga", "monitor", "-d", str(bad), "--broker", "memory://x", "--store", "memory://"]
    )
    assert 2 == result.exit_code, result.output
    assert f"{bad}:5: sagas[0].deadline: 'soon' is not a duration" in result.output


def test_discover_prints_a_draft_definition() -> None:
    """`saga discover` reads the topics' history and prints the draft YAML with evidence."""
    url = f"memory://cli-discover-{uuid.uuid4().hex}"

    async def publish() -> Bus:
        bus = Bus(url)
        await bus.start()
        for topic, item in traffic():
            await bus.publish(topic, item)
        return bus  # left open: a memory broker lives as long as its process

    asyncio.run(publish())
    result = runner.invoke(
        app,
        [
            "saga",
            "discover",
            "--broker",
            url,
            "-t",
            "order",
            "-t",
            "payment",
            "-t",
            "inventory",
            "--name",
            "orders",
        ],
    )
    assert 0 == result.exit_code, result.output
    assert "- name: orders" in result.stdout
    assert "fail: [inventory.unavailable, payment.failed]" in result.stdout


def test_ls_says_when_the_monitor_is_behind(store_url: str) -> None:
    """A monitor that recorded a lag makes `saga ls` warn on stderr that its verdicts wait,
    while stdout stays the JSON scripts read."""
    from saga_monitor.model import utcnow

    store = open_saga_store(store_url)
    now = utcnow()
    store.record_monitor("ops", now, 42.0, now)
    store.close()
    result = runner.invoke(app, ["saga", "ls", "--store", store_url, "-o", "json"])
    assert 0 == result.exit_code, result.output
    assert re.search(r"monitor ops behind by 4\d(\.\d)?s", result.stderr), result.stderr
    assert 4 == len(json.loads(result.stdout))


def test_ls_is_quiet_when_the_monitor_keeps_up(store_url: str) -> None:
    """No warning while the monitor's lag is small."""
    from saga_monitor.model import utcnow

    store = open_saga_store(store_url)
    now = utcnow()
    store.record_monitor("ops", now, 0.0, now)
    store.close()
    result = runner.invoke(app, ["saga", "ls", "--store", store_url])
    assert ("", 0) == (result.stderr, result.exit_code)


def _json(*args: str) -> object:
    result = runner.invoke(app, ["saga", *args, "-o", "json"])
    assert 0 == result.exit_code, result.output
    return json.loads(result.stdout)


def test_ls_filters_by_anomaly_search_service_and_pages(store_url: str) -> None:
    """--anomaly, --search (prefix or data field), --service and --offset narrow the listing."""

    def ids(*args: str) -> list[str]:
        rows = _json("ls", "--store", store_url, *args)
        assert isinstance(rows, list)
        return sorted(row["correlation_id"] for row in rows)

    assert ["order-stuck"] == ids("--anomaly", "duplicate")
    assert ["order-ok", "order-comp"] == ids("--search", "order-o") + ids("--search", "order-c")
    assert ["order-stuck"] == ids("--search", "data.total=42")
    assert ["order-stuck"] == ids("--service", "shop")
    assert 2 == len(ids("--limit", "2", "--offset", "2"))
    (row,) = _json("ls", "--store", store_url, "--state", "stuck")  # type: ignore[misc]
    assert (["shop"], None, None) == (row["services"], row["acknowledged"], row["cause"])
    assert (True, True) == (bool(row["stuck_since"]), bool(row["waiting_since"]))


def test_ls_table_says_which_page_it_shows(store_url: str) -> None:
    """A page short of the total says which rows of how many it shows."""
    result = runner.invoke(app, ["saga", "ls", "--store", store_url, "-n", "1", "--offset", "1"])
    assert 0 == result.exit_code, result.output
    assert "(showing 2-2 of 4)" in result.stdout


def test_owes_prints_the_board(store_url: str) -> None:
    """`saga owes` names the service the stuck order waits on, in a table and in JSON."""
    board = _json("owes", "--store", store_url)
    assert isinstance(board, list)
    assert ("shop", 1, 1) == (board[0]["service"], board[0]["waiting"], board[0]["stuck"])
    table = runner.invoke(app, ["saga", "owes", "--store", store_url], env={"COLUMNS": "160"})
    assert ("shop" in table.stdout, "order-stuck" in table.stdout) == (True, True)


def test_ack_keeps_who_when_and_note(store_url: str) -> None:
    """`saga ack ID --note` is kept and shown by ls and show."""
    written = _json("ack", "order-stuck", "--note", "vendor down", "--who", "ana", "-s", store_url)
    assert isinstance(written, dict)
    assert ("ack", "ana", "vendor down") == (written["kind"], written["who"], written["note"])
    (row,) = _json("ls", "--store", store_url, "--state", "stuck")  # type: ignore[misc]
    assert ("ana", "vendor down") == (row["acknowledged"]["who"], row["acknowledged"]["note"])
    shown = runner.invoke(app, ["saga", "show", "order-stuck", "--store", store_url])
    assert ("ack by ana at" in shown.stdout, "vendor down" in shown.stdout) == (True, True)


def test_an_ack_does_not_cover_a_later_stuck_episode(store_url: str) -> None:
    """An instance acknowledged while stuck on inventory that moves on and gets stuck on
    shipping lists as not acknowledged in `saga ls`; the ack stays among its notes, and
    `saga show` says it was for an earlier episode."""
    _json("ack", "order-stuck", "--note", "vendor down", "--who", "ana", "-s", store_url)
    store = open_saga_store(store_url)
    stuck_again(store)
    store.close()
    (row,) = _json("ls", "--store", store_url, "--state", "stuck")  # type: ignore[misc]
    assert (None, ["vendor down"]) == (row["acknowledged"], [n["note"] for n in row["notes"]])
    shown = runner.invoke(app, ["saga", "show", "order-stuck", "--store", store_url])
    assert "ack (earlier episode) by ana at" in shown.stdout, shown.stdout


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["saga", "ack", "nope", "--note", "x"], 1, "no saga instance with correlation id 'nope'"),
        (["saga", "ack", "order-stuck", "--who", " "], 2, "who acknowledges must be named"),
        (["saga", "ls", "--anomaly", "weird"], 2, "--anomaly 'weird' is not an anomaly"),
        (["saga", "ls", "--service", "nobody"], 2, "--service 'nobody' owes no step"),
        (["saga", "ls", "--search", "data.=x"], 2, "a payload field is data.<field>"),
        (["saga", "owes", "--window", "soon"], 2, "'soon' is not a duration"),
    ],
)
def test_console_commands_mistakes_are_one_line(
    store_url: str, args: list[str], code: int, message: str
) -> None:
    """Mistakes in ls, owes and ack give one line and exit 2 (usage) or 1 (not found)."""
    result = runner.invoke(app, [*args, "--store", store_url])
    assert (code, True) == (result.exit_code, message in result.output), result.output
    assert "Traceback" not in result.output


def test_monitor_stops_on_sigint_even_when_started_with_it_ignored(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT) stops `saga monitor` promptly with exit 0 and no traceback, also when
    it inherited SIGINT as ignored (a job a script started with &), as SIGTERM does."""
    monitor = _monitor(tmp_path, ignore_sigint=True)
    assert monitor.stderr is not None
    try:
        started = monitor.stderr.readline()  # the "watching ..." line: the loop is running
        monitor.send_signal(signal.SIGINT)
        code = monitor.wait(timeout=60)
    finally:
        monitor.kill()
        rest = monitor.stderr.read()
    assert (0, True, False) == (code, started.startswith("watching"), "Traceback" in rest)


def _monitor(tmp_path: Path, *args: str, ignore_sigint: bool = False) -> subprocess.Popen[str]:
    """`choreo saga monitor` of the demo's sagas on an embedded broker and store in
    ``tmp_path`` (``broker.db``, ``s.db``) with ``args``, its stderr piped; ``ignore_sigint``:
    started as a job a script starts with & (SIGINT inherited as ignored)."""
    return subprocess.Popen(
        [sys.executable, "-m", "choreo", "saga", "monitor", "-d", str(DEMO_SAGAS), *args,
         "--broker", f"sqlite:///{tmp_path}/broker.db", "--store", f"sqlite:///{tmp_path}/s.db"],
        stderr=subprocess.PIPE, text=True,
        preexec_fn=_ignore_sigint if ignore_sigint else None,  # noqa: PLW1509
    )  # fmt: skip


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_ls_says_that_a_monitor_stopped_rather_than_that_it_is_behind(tmp_path: Path) -> None:
    """After `saga monitor` stopped (Ctrl-C), `saga ls` says it stopped, not that it is behind
    by its growing silence (which read as a running monitor that lags)."""
    store = tmp_path / "s.db"
    monitor = _monitor(tmp_path)
    try:
        assert monitor.stderr is not None
        assert monitor.stderr.readline().startswith("watching")
        deadline = time.monotonic() + 60
        while not _group_recorded(store):  # its first tick: the group's row is there
            assert time.monotonic() < deadline, "the monitor recorded no watermark"
            time.sleep(0.05)
        monitor.send_signal(signal.SIGINT)
        assert 0 == monitor.wait(timeout=60)
    finally:
        monitor.kill()
    listed = choreo("saga", "ls", "-s", f"sqlite:///{store}", cwd=tmp_path)
    warning = "warning: monitor choreo-saga-monitor stopped "
    assert (0, True) == (listed.returncode, listed.stderr.startswith(warning)), listed.stderr


def _group_recorded(store: Path) -> bool:
    with contextlib.closing(sqlite3.connect(store)) as db:
        try:
            query = "SELECT 1 FROM saga_monitors WHERE name = 'choreo-saga-monitor'"
            return bool(db.execute(query).fetchall())
        except sqlite3.OperationalError:  # no table yet
            return False


def test_serve_refuses_a_store_file_that_is_not_there(tmp_path: Path) -> None:
    """`saga serve --store` naming a missing SQLite file (a typo) exits 1 with one line and
    creates nothing, as ls and show do, instead of serving an empty console."""
    typo = tmp_path / "saga.db"
    port = str(_free_port())
    result = choreo("saga", "serve", "--store", f"sqlite:///{typo}", "--port", port, cwd=tmp_path)
    expected = f"error: no saga store at sqlite:///{typo} (no such file); give the --store"
    assert (1, True) == (result.returncode, result.stderr.startswith(expected)), result.stderr
    assert (1, []) == (len(result.stderr.splitlines()), list(tmp_path.iterdir()))


@pytest.mark.parametrize(
    "args", [["ls"], ["owes"], ["show", "order-1"], ["ack", "order-1", "--note", "x"], ["serve"]]
)
def test_a_broker_file_given_as_the_store_is_refused_untouched(
    tmp_path: Path, args: list[str]
) -> None:
    """The embedded broker's file given as --store (they sit side by side) is not a saga
    store: one line, exit 1, and no saga tables written into the broker's file."""
    broker = tmp_path / "broker.db"
    sent = choreo(
        "publish", "orders", "--type", "x", "--broker", f"sqlite:///{broker}", cwd=tmp_path
    )
    assert 0 == sent.returncode, sent.stderr
    with contextlib.closing(sqlite3.connect(broker)) as db:
        before = db.execute("SELECT name FROM sqlite_master ORDER BY name").fetchall()
    port = ["--port", str(_free_port())] if args == ["serve"] else []
    result = choreo("saga", *args, *port, "--store", f"sqlite:///{broker}", cwd=tmp_path)
    expected = f"error: sqlite:///{broker} is not a saga store (it holds the tables "
    assert (1, True) == (result.returncode, result.stderr.startswith(expected)), result.stderr
    assert 1 == len(result.stderr.splitlines()), result.stderr
    with contextlib.closing(sqlite3.connect(broker)) as db:
        assert before == db.execute("SELECT name FROM sqlite_master ORDER BY name").fetchall()


def test_ls_with_a_saga_name_nobody_knows_is_a_usage_error(store_url: str, tmp_path: Path) -> None:
    """`saga ls --saga` with a misspelt saga is one line naming the sagas there, exit 2, not
    an empty listing that reads as 'nothing stuck'; a saga of --definitions with no instances
    yet lists none."""
    typo = choreo(
        "saga", "ls", "--saga", "order-fulfilmnet", "-o", "json", "-s", store_url, cwd=tmp_path
    )
    expected = "error: --saga 'order-fulfilmnet' is no saga with instances in "
    assert (2, "") == (typo.returncode, typo.stdout), typo.stderr
    assert [True, True] == [expected in typo.stderr, "(sagas: order-fulfilment)" in typo.stderr]
    assert 1 == len(typo.stderr.splitlines()), typo.stderr
    known = choreo(
        "saga", "ls", "--saga", "order-fulfilment", "-o", "json", "-s", store_url, cwd=tmp_path
    )
    assert (0, 4) == (known.returncode, len(json.loads(known.stdout))), known.stderr
    defined = tmp_path / "other.yaml"
    defined.write_text("sagas:\n  - name: other\n    start: [a]\n    steps: [{event: b}]\n")
    args = ["--saga", "other", "-d", str(defined), "-o", "json"]
    none_yet = choreo("saga", "ls", *args, "-s", store_url, cwd=tmp_path)
    assert (0, []) == (none_yet.returncode, json.loads(none_yet.stdout)), none_yet.stderr


@pytest.fixture
def recorded(tmp_path: Path) -> str:
    """An embedded broker file holding the order traffic of test_discovery (order, payment,
    inventory and shipping topics)."""
    url = f"sqlite:///{tmp_path}/broker.db"

    async def publish() -> None:
        async with Bus(url) as bus:
            for topic, item in traffic():
                await bus.publish(topic, item)

    asyncio.run(publish())
    return url


def test_discover_json_is_the_report(recorded: str, tmp_path: Path) -> None:
    """`saga discover --output json` prints the report, with the counts per event type."""
    topics = ["-t", "order", "-t", "payment", "-t", "inventory"]
    result = choreo("saga", "discover", "--broker", recorded, *topics, "-o", "json", cwd=tmp_path)
    assert 0 == result.returncode, result.stderr
    report = json.loads(result.stdout)
    expected = ({"order.placed": 28}, {"inventory.unavailable": 5, "payment.failed": 3})
    assert expected == (report["starts"], report["fail"])


def test_discover_of_topics_without_events_says_so(recorded: str, tmp_path: Path) -> None:
    """A misspelt --topic is named: alone it is one line and exit 1 (no draft made of
    nothing); beside a topic with events, a warning on stderr and the draft of the others."""
    alone = choreo("saga", "discover", "--broker", recorded, "-t", "oder", cwd=tmp_path)
    expected = f"error: no events on oder on {recorded}; check --topic (choreo topics ls"
    assert (1, "", True) == (alone.returncode, alone.stdout, alone.stderr.startswith(expected))
    assert 1 == len(alone.stderr.splitlines()), alone.stderr
    both = choreo(
        "saga", "discover", "--broker", recorded, "-t", "order", "-t", "paymnt", cwd=tmp_path
    )
    assert (0, True) == (both.returncode, "start: [order.placed]" in both.stdout), both.stderr
    assert both.stderr.startswith(f"warning: no events on paymnt on {recorded}; "), both.stderr


def test_monitor_refuses_a_tick_of_zero(tmp_path: Path) -> None:
    """`saga monitor --tick 0` (a timer that never waits, a core at 100%) is one line, exit 2,
    before anything is opened or created."""
    store = f"sqlite:///{tmp_path}/sagas.db"
    result = choreo(
        "saga", "monitor", "-d", str(DEMO_SAGAS), "--tick", "0", "-s", store, cwd=tmp_path
    )
    expected = ["error: --tick '0' must be longer than 0; use e.g. 1s"]
    assert (2, expected) == (result.returncode, result.stderr.splitlines())
    assert [] == list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("topic", "said"),
    [
        ("bad topic", "error: --alerts-topic 'bad topic' is not a topic name every broker takes"),
        ("saga/alerts", "error: --alerts-topic 'saga/alerts' is not a topic name every broker"),
        ("a" * 250, "error: --alerts-topic 'aaaa"),
        ("  ", "error: a --alerts-topic name cannot be empty; name the topic"),
    ],
)
def test_monitor_refuses_an_alerts_topic_no_broker_takes(
    tmp_path: Path, topic: str, said: str
) -> None:
    """`saga monitor --alerts-topic` with a name some broker refuses (a space, a slash, over
    249 characters) or a blank one is one line, exit 2, before a broker or store is opened."""
    store = f"sqlite:///{tmp_path}/sagas.db"
    args = ["-d", str(DEMO_SAGAS), "-b", "nats://127.0.0.1:1", "-s", store]
    result = choreo("saga", "monitor", *args, "--alerts-topic", topic, cwd=tmp_path)
    lines = result.stderr.splitlines()
    assert (2, 1, True) == (result.returncode, len(lines), lines[0].startswith(said)), lines
    assert "letters, digits, '.', '_' or '-'" in lines[0] or not topic.strip()
    assert [] == list(tmp_path.iterdir())


@pytest.mark.parametrize("output", ["table", "json"])
def test_an_ack_whose_output_cannot_be_written_still_exits_0(
    store_url: str, tmp_path: Path, output: str
) -> None:
    """The note is kept before anything is printed: a closed stdout (`| head -0`) does not
    make `saga ack` exit 1, which would make a retrying script add it twice."""
    args = ["saga", "ack", "order-stuck", "--note", "n", "--who", "ana", "-o", output]
    result = choreo_into_a_closed_pipe(*args, "-s", store_url, cwd=tmp_path)
    assert (0, "") == (result.returncode, result.stderr)
    (row,) = _json("ls", "--store", store_url, "--state", "stuck")  # type: ignore[misc]
    assert ["n"] == [note["note"] for note in row["notes"]]


@pytest.mark.parametrize(
    "args",
    [
        ["ls"],
        ["ls", "-o", "json"],
        ["show", "order-stuck"],
        ["show", "order-stuck", "-o", "json"],
        ["owes"],
        ["owes", "-o", "json"],
    ],
)
def test_a_listing_into_a_closed_pipe_exits_0(
    store_url: str, tmp_path: Path, args: list[str]
) -> None:
    """`saga ls | head -1` (a reader that stops reading) is no failure: the listing exits 0
    and says nothing, as publish and ack do (a script with pipefail goes on)."""
    result = choreo_into_a_closed_pipe("saga", *args, "-s", store_url, cwd=tmp_path)
    assert (0, "") == (result.returncode, result.stderr)


def test_a_failing_listing_into_a_closed_pipe_still_fails(tmp_path: Path) -> None:
    """A listing whose work fails keeps its one line and exit code, closed pipe or not."""
    missing = f"sqlite:///{tmp_path}/none.db"
    result = choreo_into_a_closed_pipe("saga", "ls", "-s", missing, cwd=tmp_path)
    assert (1, True) == (result.returncode, "no saga store" in result.stderr), result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--retain-stuck", "0"], "--retain-stuck '0' would drop instances as they get stuck"),
        (["--retain-acknowledged", "0s"], "--retain-acknowledged '0s' would drop instances as"),
        (["--retain-stuck", ""], "'' is not a duration for --retain-stuck"),
        (["--retain-acknowledged", ""], "'' is not a duration for --retain-acknowledged"),
        (["--retention", ""], "'' is not a duration for --retention"),
    ],
)
def test_retaining_for_no_time_or_an_empty_value_is_a_usage_error(
    tmp_path: Path, args: list[str], message: str
) -> None:
    """`--retain-stuck 0` (drop stuck instances as they get stuck) and an empty value (a
    script's unset variable, which turned the option off) are one line and exit 2; the
    monitor does not start."""
    monitor = _monitor(tmp_path, *args)
    try:
        code = monitor.wait(timeout=60)
    finally:
        monitor.kill()
    assert monitor.stderr is not None
    said = monitor.stderr.read()
    assert (2, True, 1) == (code, message in said, len(said.splitlines())), said


def test_ls_since_zero_or_empty_does_not_list_everything(store_url: str, tmp_path: Path) -> None:
    """`--since 0` lists what was updated within no time (nothing), and `--since ""` (a
    script's unset variable) is one line and exit 2: neither drops the filter silently."""
    zero = choreo("saga", "ls", "--since", "0", "-o", "json", "-s", store_url, cwd=tmp_path)
    assert (0, []) == (zero.returncode, json.loads(zero.stdout)), zero.stderr
    empty = choreo("saga", "ls", "--since", "", "-o", "json", "-s", store_url, cwd=tmp_path)
    assert (2, "") == (empty.returncode, empty.stdout)
    assert "'' is not a duration for --since" in empty.stderr, empty.stderr


@pytest.mark.parametrize(
    ("url", "names"),
    [
        # connect_timeout (10 s by default) bounds the reconnect attempts to the closed port
        ("nats://127.0.0.1:1?connect_timeout=1", "cannot connect to NATS at nats://127.0.0.1:1"),
        pytest.param(
            "amqp://guest:wrong@127.0.0.1:5672/",
            "cannot connect to RabbitMQ at amqp://guest:***@127.0.0.1:5672/",
            marks=pytest.mark.rabbitmq,
        ),
    ],
)
def test_monitor_on_a_broker_it_cannot_reach_is_one_line(
    tmp_path: Path, url: str, names: str
) -> None:
    """A broker that does not answer (or refuses the password) stops `saga monitor` with the
    one error line, exit 1, without first saying it is "watching"."""
    store = f"sqlite:///{tmp_path}/s.db"
    result = choreo("saga", "monitor", "-d", str(DEMO_SAGAS), "-b", url, "-s", store, cwd=tmp_path)
    lines = result.stderr.splitlines()
    assert (1, 1, True) == (result.returncode, len(lines), names in result.stderr), lines


def test_monitor_from_beginning_says_when_its_group_has_read_already(tmp_path: Path) -> None:
    """--from-beginning moves a new group only: with a group that already read the topics it
    says so first (the history will not be read), with a new group it just starts."""
    broker = f"sqlite:///{tmp_path}/broker.db"
    sent = choreo("publish", "orders", "--type", "order.placed", "--broker", broker, cwd=tmp_path)
    read = ["subscribe", "orders", "--group", "choreo-saga-monitor", "--from-beginning"]
    had = choreo(*read, "--count", "1", "--output", "json", "--broker", broker, cwd=tmp_path)
    assert (0, 0) == (sent.returncode, had.returncode), sent.stderr + had.stderr
    first = []
    for args in (["--from-beginning"], ["--from-beginning", "--group", "new"]):
        monitor = _monitor(tmp_path, *args)
        try:
            assert monitor.stderr is not None
            first.append(monitor.stderr.readline())
            monitor.send_signal(signal.SIGINT)
            assert 0 == monitor.wait(timeout=60)
        finally:
            monitor.kill()
    warning = "warning: group 'choreo-saga-monitor' already reads orders: --from-beginning "
    assert [True, True] == [first[0].startswith(warning), first[1].startswith("watching")], first
