"""The live console: fragments, paging, the board, notes, the collapsed timeline, the clickable
graph, the "monitor behind" banner; and in a real headless Chromium, typing that survives a
live update, paging, the board naming the late service, and an acknowledgement."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from broker import Event
from saga_monitor import Correlator, SagaStore, load_definitions
from saga_monitor.web import create_app
from tests.saga_monitor.helpers import EXAMPLE, example, stuck_again
from tests.saga_monitor.test_web import CHROMIUM, CHROMIUM_ARGS, _free_port

NAMED = EXAMPLE.read_text().replace(
    "      - event: inventory.reserved\n",
    "      - event: inventory.reserved\n        service: inventory-service\n",
)


def _place(store: SagaStore, corr: str, seconds_ago: float, customer: str = "c-1") -> None:
    """An order placed (and paid) ``seconds_ago``: running, waiting for inventory.reserved."""
    now = datetime.now(UTC)
    correlator = Correlator(example())
    for type_, offset in (("order.placed", 0.0), ("payment.authorized", 1.0)):
        item = Event(
            type=type_,
            source="shop",
            id=f"{corr}-{type_}",
            time=now - timedelta(seconds=seconds_ago - offset),
            data={"customer": customer},
            extensions={"correlationid": corr},
        )
        correlator.apply(store, item, topic="t", now=now)


@pytest.fixture
def named(tmp_path: Path) -> Path:
    """The example definitions, with inventory.reserved owed by inventory-service."""
    path = tmp_path / "named.yaml"
    path.write_text(NAMED)
    return path


@pytest.fixture
def client(store: SagaStore, named: Path) -> TestClient:
    for n in range(5):
        _place(store, f"order-p{n}", 10 + n, customer=f"c-{n % 2}")
    return TestClient(create_app(store, definitions=load_definitions(named)))


def test_console_patches_itself_instead_of_reloading(client: TestClient) -> None:
    """The console has no meta refresh: it names where its parts come from and how often."""
    page = client.get("/").text
    assert ('http-equiv="refresh"' in page, 'data-src="/partials/console"' in page) == (
        False,
        True,
    )
    parts = client.get("/partials/console", params={"q": "order-p", "limit": 2}).json()
    assert {"banner", "counts", "board", "list", "orphans"} == set(parts)
    assert 'of <b class="total">5</b>' in parts["list"]
    assert 'href="/?q=order-p&amp;limit=2&amp;offset=2" data-offset="2">next' in parts["list"]


def test_api_pages_with_totals_and_search(client: TestClient) -> None:
    """/api/instances honours limit and offset and sends the total; search takes a prefix or
    a payload field; filters take an anomaly, a service and an awaited event."""

    def ids(**params: object) -> tuple[list[str], str]:
        response = client.get("/api/instances", params=params)
        assert 200 == response.status_code, response.text
        return [r["correlation_id"] for r in response.json()], response.headers["x-total-count"]

    first, total = ids(q="order-p", limit=2)
    second, _ = ids(q="order-p", limit=2, offset=2)
    assert ("5", 2, 2, set()) == (total, len(first), len(second), set(first) & set(second))
    assert (["order-p1", "order-p3"], "2") == (sorted(ids(q="data.customer=c-1")[0]), "2")
    assert (["order-stuck"], "1") == ids(anomaly="duplicate")
    assert "6" == ids(service="inventory-service")[1]
    assert "0" == ids(service="nobody")[1]
    assert "6" == ids(saga="order-fulfilment", awaiting="inventory.reserved")[1]
    assert 422 == client.get("/api/instances", params={"anomaly": "weird"}).status_code
    assert 422 == client.get("/api/instances", params={"q": "data.=x"}).status_code


def test_board_names_the_service_the_stuck_order_waits_on(client: TestClient) -> None:
    """The board's first row is the service owing the stuck order's event."""
    board = client.get("/api/board").json()
    assert ("inventory-service", 1, 6) == (
        board[0]["service"],
        board[0]["stuck"],
        board[0]["waiting"],
    )
    page = client.get("/").text
    assert '<tr class="service late" data-service="inventory-service">' in page


def test_notes_are_kept_and_shown(client: TestClient) -> None:
    """An acknowledgement posted for an instance is kept and shown on its page and the list."""
    url = "/api/notes/order-fulfilment/order-stuck"
    posted = client.post(url, json={"who": "ana", "note": "vendor <b>down</b>"})
    assert (201, "ack") == (posted.status_code, posted.json()["kind"])
    page = client.get("/instances/order-fulfilment/order-stuck").text
    assert "vendor &lt;b&gt;down&lt;/b&gt;" in page
    (row,) = client.get("/api/instances", params={"state": "stuck"}).json()
    assert "ana" == row["acknowledged"]["who"]
    assert 404 == client.post("/api/notes/order-fulfilment/nope", json={"who": "a"}).status_code
    assert 422 == client.post(url, json={"who": ""}).status_code
    assert 422 == client.post(url, json={"who": "a", "kind": "shrug"}).status_code


def test_an_ack_of_an_earlier_stuck_episode_no_longer_counts(
    client: TestClient, store: SagaStore
) -> None:
    """An instance acknowledged while stuck that moves on and gets stuck again lists under
    `acknowledged=no` and as unacknowledged; its page marks the ack as an earlier episode's."""
    url = "/api/notes/order-fulfilment/order-stuck"
    posted = client.post(url, json={"who": "ana", "note": "vendor down"}).json()
    assert posted["stuck_since"] is not None
    stuck_again(store)
    rows = client.get("/api/instances", params={"acknowledged": "no", "state": "stuck"}).json()
    (row,) = [r for r in rows if r["correlation_id"] == "order-stuck"]
    assert row["acknowledged"] is None
    page = client.get("/instances/order-fulfilment/order-stuck").text
    assert "<b>ack (earlier episode)</b> by" in page


def test_timeline_collapses_long_gaps_and_shows_arrival_times(
    client: TestClient, store: SagaStore
) -> None:
    """A long wait after short steps is drawn collapsed with its real length; every event
    shows when it arrived next to when it happened."""
    _place(store, "order-old", 3600)
    page = client.get("/instances/order-fulfilment/order-old").text
    assert ('<g class="collapsed">' in page, "≈59m" in page) == (True, True)
    assert 2 == page.count('<td class="arrived">')


def test_step_graph_links_to_the_instances_waiting_for_a_step(client: TestClient) -> None:
    """A step of the graph links to the console filtered on the instances awaiting it."""
    page = client.get("/sagas").text
    href = "/?saga=order-fulfilment&amp;awaiting=inventory.reserved"
    assert f'<a class="step-link" href="{href}">' in page


def test_banner_says_when_the_monitor_is_behind(client: TestClient, store: SagaStore) -> None:
    """A monitor that recorded a lag puts "monitor … behind by …" on the console."""
    now = datetime.now(UTC)
    store.record_monitor("ops", now - timedelta(minutes=5), 300.0, now)
    banner = client.get("/partials/console").json()["banner"]
    assert "monitor ops behind by 5m" in banner


def test_banner_says_when_the_monitor_stopped(client: TestClient, store: SagaStore) -> None:
    """A monitor that stopped cleanly is "stopped … ago" on the console, not behind."""
    now = datetime.now(UTC)
    store.record_monitor("ops", now - timedelta(minutes=5), 0.0, now - timedelta(minutes=5))
    store.record_stopped("ops", now - timedelta(minutes=5))
    banner = client.get("/partials/console").json()["banner"]
    stopped = "monitor ops stopped 5m ago: verdicts wait until it runs again"
    assert (True, False) == (stopped in banner, "behind" in banner), banner


@pytest.fixture
def live(store: SagaStore, named: Path) -> Iterator[str]:
    """The app with a 1 s live update, served by uvicorn on a free port (in a thread)."""
    for n in range(5):
        _place(store, f"order-p{n}", 10 + n)
    port = _free_port()
    app = create_app(store, definitions=load_definitions(named), refresh=1)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.mark.browser
def test_browser_console_live_paging_board_and_acknowledgement(live: str, store: SagaStore) -> None:
    """In Chromium: typing in the filter survives live updates (no reload) while a new order
    appears; the pager walks the results; the board names the late service; an
    acknowledgement made on the instance page is shown there and in the list, and kept; a step
    of the graph opens the instances waiting for it."""
    from playwright.sync_api import expect, sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install -y chromium"
    assert 200 == httpx.get(f"{live}/healthz").status_code
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 500})
            page.goto(f"{live}/?limit=3")
            late = page.locator("tr.service").first
            expect(late).to_have_attribute("data-service", "inventory-service")
            expect(late).to_have_class("service late")
            page.evaluate("window.loadedOnce = 42")
            search = page.locator("#q")
            search.click()
            search.press_sequentially("order-p", delay=30)
            expect(page.locator(".pager .total")).to_have_text("5")
            page.evaluate("window.scrollTo(0, 120)")
            scrolled = page.evaluate("window.scrollY")
            updates = int(page.evaluate("document.body.dataset.updates"))
            _place(store, "order-p9", 1)  # arrives while the operator types
            page.wait_for_function(
                f"Number(document.body.dataset.updates) >= {updates + 2}", timeout=20_000
            )
            expect(page.locator(".pager .total")).to_have_text("6")
            state = page.evaluate(
                "[document.getElementById('q').value, document.activeElement.id, "
                "window.loadedOnce, window.scrollY]"
            )
            assert ["order-p", "q", 42, scrolled] == state
            search.press_sequentially("9", delay=30)
            expect(page.locator("tr.instance")).to_have_count(1)
            search.press("Backspace")
            expect(page.locator(".showing")).to_contain_text("1-3 of")
            first = page.locator("tr.instance").all_inner_texts()
            page.locator("a.next").click()
            expect(page.locator(".showing")).to_contain_text("4-6 of")
            assert "offset=3" in page.url
            assert not set(first) & set(page.locator("tr.instance").all_inner_texts())
            page.goto(f"{live}/instances/order-fulfilment/order-stuck")
            page.fill("#ack input[name=who]", "ana")
            page.fill("#ack input[name=note]", "vendor down, ticket 42")
            page.click("#ack button[value=ack]")
            expect(page.locator("#notes .note-ack")).to_contain_text("ana")
            page.reload()
            expect(page.locator("#notes .note-ack")).to_contain_text("vendor down, ticket 42")
            page.goto(f"{live}/?state=stuck")
            expect(page.locator("tr.instance td.ack")).to_contain_text("ack ana")
            page.goto(f"{live}/sagas")
            page.locator('g.node[data-event="inventory.reserved"]').click()
            page.wait_for_url("**/?saga=order-fulfilment&awaiting=inventory.reserved")
            expect(page.locator(".pager .total")).to_have_text("7")
        finally:
            browser.close()


@pytest.mark.browser
def test_browser_console_says_when_it_cannot_update(live: str) -> None:
    """In Chromium: a search the server refuses, or a server that stops answering, puts "not
    updated since …: why" over the list (which would otherwise stay as it was, looking live);
    the next good update takes it away."""
    from playwright.sync_api import expect, sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install -y chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{live}/")
            status = page.locator("#live-status")
            expect(status).to_be_hidden()
            page.locator("#q").fill("data.=x")
            expect(status).to_contain_text("not updated since ")
            expect(status).to_contain_text("a payload field is data.<field>")
            page.locator("#q").fill("order-p")
            expect(status).to_be_hidden()
            expect(page.locator(".pager .total")).to_have_text("5")
            page.route("**/partials/console*", lambda route: route.abort())
            expect(status).to_contain_text("the server does not answer", timeout=10_000)
            page.unroute("**/partials/console*")
            expect(status).to_be_hidden(timeout=10_000)
        finally:
            browser.close()
