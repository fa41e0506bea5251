"""The saga web page and JSON API, over HTTP and in a real headless Chromium."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from saga_monitor import SagaStore
from saga_monitor.web import create_app
from tests.saga_monitor.helpers import EXAMPLE, traceparent_of

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def client(store: SagaStore) -> TestClient:
    """The app over the store, with the example definitions for the graph."""
    return TestClient(create_app(store, definitions=EXAMPLE))


def test_index_lists_instances_with_counts_and_filters(client: TestClient) -> None:
    """The list shows each instance and the counts by state; ?state= filters."""
    page = client.get("/").text
    assert all(f">{corr}</a>" in page for corr in ("order-ok", "order-comp", "order-stuck"))
    assert '<b id="count-stuck">1</b>' in page
    filtered = client.get("/?state=stuck").text
    assert (">order-stuck</a>" in filtered, ">order-ok</a>" in filtered) == (True, False)


def test_pages_refresh_themselves_unless_told_not_to(client: TestClient) -> None:
    """Every page reloads every 5 s by default; ?refresh=0 turns it off."""
    assert '<meta http-equiv="refresh" content="5">' in client.get("/sagas").text
    assert 'http-equiv="refresh"' not in client.get("/?refresh=0").text


def test_event_data_is_escaped_everywhere(client: TestClient) -> None:
    """A payload with <script> is rendered as text, never as markup."""
    page = client.get("/instances/order-fulfilment/order-stuck").text
    assert "<script>" not in page
    assert "&lt;script&gt;window.pwned = 1&lt;/script&gt;" in page


def test_timeline_table_names_each_events_trace(client: TestClient) -> None:
    """An instance's page shows the trace id of each of its events."""
    page = client.get("/instances/order-fulfilment/order-comp").text
    assert "<th>trace</th>" in page
    assert 6 == page.count(f"<td>{traceparent_of('order-comp')[3:35]}</td>")


def test_timeline_draws_compensations_deadline_and_waiting(client: TestClient) -> None:
    """The trace view has a bar per event, compensation bars, the deadline and the wait."""
    compensated = client.get("/instances/order-fulfilment/order-comp").text
    assert 2 == compensated.count('class="bar bar-compensation"')
    stuck = client.get("/instances/order-fulfilment/order-stuck").text
    assert ('class="deadline"' in stuck, "stuck: waiting for inventory.reserved" in stuck) == (
        True,
        True,
    )


def test_definition_graph_shows_live_counts(client: TestClient) -> None:
    """The saga graph shows, per step, how many instances saw it and are stuck waiting."""
    page = client.get("/sagas").text
    assert 'data-event="inventory.reserved"' in page
    assert "1 stuck" in page


def test_json_api(client: TestClient) -> None:
    """/api/ serves instances, one instance, counts and definitions with counts."""
    listed = client.get("/api/instances", params={"state": "stuck"}).json()
    assert ["order-stuck"] == [i["correlation_id"] for i in listed]
    one = client.get("/api/instances/order-fulfilment/order-comp").json()
    assert ("compensated", 6) == (one["state"], len(one["timeline"]))
    counts = {c["state"]: c["count"] for c in client.get("/api/counts").json()}
    assert {"completed": 1, "compensated": 1, "failed": 1, "stuck": 1} == counts
    definitions = client.get("/api/definitions").json()
    assert 1 == definitions[0]["counts"]["inventory.reserved"]["stuck"]
    assert 404 == client.get("/api/instances/order-fulfilment/nope").status_code
    assert 422 == client.get("/api/instances", params={"state": "nope"}).status_code


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def served(store: SagaStore) -> Iterator[str]:
    """The app served by uvicorn on a free port (in a thread)."""
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(store, definitions=EXAMPLE, refresh=0),
            host="127.0.0.1",
            port=port,
            log_level="error",
        )
    )
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
def test_browser_renders_stuck_instance_and_purple_compensations(
    served: str, tmp_path: Path
) -> None:
    """In Chromium: the stuck order is listed, the script never runs, compensations are purple."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install -y chromium"
    assert 200 == httpx.get(f"{served}/healthz").status_code
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{served}/")
            stuck_rows = page.locator('tr.instance[data-state="stuck"]')
            assert "order-stuck" in stuck_rows.first.inner_text()
            page.goto(f"{served}/instances/order-fulfilment/order-stuck")
            assert page.evaluate("window.pwned === undefined")
            assert "<script>window.pwned = 1</script>" in page.locator("pre").first.inner_text()
            page.goto(f"{served}/instances/order-fulfilment/order-comp")
            page.screenshot(path=str(tmp_path / "compensated.png"), full_page=True)
            box = page.locator("rect.bar-compensation").first.bounding_box()
            assert box is not None
            shot = tmp_path / "bar.png"
            centre = {"x": box["x"] + box["width"] / 2 - 2, "y": box["y"] + box["height"] / 2 - 2}
            page.screenshot(path=str(shot), clip={**centre, "width": 4, "height": 4})
            colour = _pixel(shot, 2, 2)
        finally:
            browser.close()
    assert _close(colour, (0xA3, 0x47, 0xD1)), colour


def _pixel(png: Path, x: float, y: float) -> tuple[int, int, int]:
    """The RGB colour at (x, y) of a screenshot (decoded with the browser's own PNG)."""
    import struct
    import zlib

    data = png.read_bytes()
    width, height = struct.unpack(">II", data[16:24])
    bit_depth, colour_type = data[24], data[25]
    assert (8, True) == (bit_depth, colour_type in (2, 6)), (bit_depth, colour_type)
    channels = 4 if colour_type == 6 else 3
    raw, offset = b"", 8
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if kind == b"IDAT":
            raw += data[offset + 8 : offset + 8 + length]
        offset += 12 + length
    rows = _unfilter(zlib.decompress(raw), width, height, channels)
    row, col = int(y), int(x)
    pixel = rows[row][col * channels : col * channels + 3]
    return pixel[0], pixel[1], pixel[2]


def _unfilter(raw: bytes, width: int, height: int, channels: int) -> list[bytearray]:
    stride = width * channels
    rows: list[bytearray] = []
    previous = bytearray(stride)
    for r in range(height):
        kind = raw[r * (stride + 1)]
        line = bytearray(raw[r * (stride + 1) + 1 : (r + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else (up if pb <= pc else corner)
                line[i] = (line[i] + pred) & 0xFF
        rows.append(line)
        previous = line
    return rows


def _close(actual: tuple[int, int, int], expected: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= 12 for a, b in zip(actual, expected, strict=True))
