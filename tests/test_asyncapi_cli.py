"""``choreo asyncapi`` as a user runs it, on the example shop (tests/asyncapi_shop.py): the
documents pass the official AsyncAPI parser (node, tests/asyncapi/), the page serves, a bad
MODULE:ATTR or a busy port is one line and an exit code."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from schemas import RegistryClient
from tests.asyncapi_shop import SUBJECTS
from tests.servers import unavailable

ROOT = Path(__file__).resolve().parents[1]
PARSER_DIR = ROOT / "tests" / "asyncapi"
SHOP = "tests.asyncapi_shop"
#: What the parser reports about every 3.0.0 document: 3.1.0 exists (severity info).
KNOWN_WARNINGS = {"asyncapi-latest-version"}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The environment of a choreo process: the shop importable, its registry filled."""
    import asyncio

    url = f"sqlite:///{tmp_path}/registry.db"

    async def fill() -> None:
        async with RegistryClient.from_url(url) as client:
            for subject, (kind, text) in SUBJECTS.items():
                await client.register(subject, text, kind)

    asyncio.run(fill())
    return {**os.environ, "PYTHONPATH": str(ROOT), "SHOP_REGISTRY_URL": url}


def choreo(
    *args: str, cwd: Path, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "choreo", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def parse(*documents: Path) -> list[dict[str, object]]:
    """The official parser's verdict on each document (tests/asyncapi/validate.mjs)."""
    node = shutil.which("node")
    if node is None:
        unavailable("node is not installed (apt-get install nodejs)")
    if not (PARSER_DIR / "node_modules" / "@asyncapi" / "parser").is_dir():
        unavailable(f"the AsyncAPI parser is not installed: npm ci --prefix {PARSER_DIR}")
    result = subprocess.run(
        [node, str(PARSER_DIR / "validate.mjs"), *map(str, documents)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_the_shop_documents_pass_the_official_parser(tmp_path: Path, env: dict[str, str]) -> None:
    """JSON and YAML documents of the shop (four buses on four backends; pydantic, JSON Schema,
    Avro, JSON Schema and Protobuf subject payloads), of one bus, of an embedded-only bus and
    of a factory function parse with no error and no warning but "3.1.0 exists"."""
    written = []
    registry = ("--registry", env["SHOP_REGISTRY_URL"])
    for name, target, options in [
        ("shop.json", f"{SHOP}:services", ()),
        ("shop.yaml", f"{SHOP}:services", ("--output", "yaml")),
        ("orders.yaml", f"{SHOP}:orders", ("--output", "yaml")),
        ("shipping.json", f"{SHOP}:shipping", registry),  # no codec: the registry is named
        ("factory.json", f"{SHOP}:make_services", ()),
    ]:
        result = choreo("asyncapi", target, *options, cwd=tmp_path, env=env)
        assert 0 == result.returncode, result.stderr
        (tmp_path / name).write_text(result.stdout)
        written.append(tmp_path / name)
    verdicts = parse(*written)
    assert [(str(p), True, []) for p in written] == [
        (v["file"], v["parsed"], v["errors"]) for v in verdicts
    ]
    warnings = {w["code"] for v in verdicts for w in v["warnings"]}  # type: ignore[attr-defined]
    assert KNOWN_WARNINGS == warnings


def test_the_parser_check_finds_errors(tmp_path: Path, env: dict[str, str]) -> None:
    """The check is real: a broken binding and an Avro schema with an unknown type are errors."""
    result = choreo("asyncapi", f"{SHOP}:services", cwd=tmp_path, env=env)
    document = json.loads(result.stdout)
    document["operations"]["send.orders"]["bindings"]["amqp"]["deliveryMode"] = 5
    (tmp_path / "binding.json").write_text(json.dumps(document))
    document = json.loads(result.stdout)
    document["components"]["schemas"]["payments-value"]["schema"]["fields"][0]["type"] = "strin"
    (tmp_path / "avro.json").write_text(json.dumps(document))
    binding, avro = parse(tmp_path / "binding.json", tmp_path / "avro.json")
    assert "deliveryMode" in json.dumps(binding["errors"])
    assert "undefined type name: shop.payments.strin" in json.dumps(avro["errors"])


def test_json_and_yaml_are_the_same_document(tmp_path: Path, env: dict[str, str]) -> None:
    """``--output yaml`` is the JSON document in YAML; the default is JSON."""
    as_json = choreo("asyncapi", f"{SHOP}:services", cwd=tmp_path, env=env)
    as_yaml = choreo("asyncapi", "-o", "yaml", f"{SHOP}:services", cwd=tmp_path, env=env)
    assert (0, 0) == (as_json.returncode, as_yaml.returncode), as_json.stderr + as_yaml.stderr
    document = json.loads(as_json.stdout)
    assert document == yaml.safe_load(as_yaml.stdout)
    assert ["orders", "payments", "inventory", "shipping", "returns"] == list(document["channels"])


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("tests.asyncapi_shop", "is not MODULE:ATTR"),
        ("no_such_module:bus", "cannot import 'no_such_module' for no_such_module:bus: no module"),
        (f"{SHOP}:nothing", "'tests.asyncapi_shop' has no attribute 'nothing'"),
        (f"{SHOP}:SUBJECTS", "tests.asyncapi_shop:SUBJECTS is dict, not a Bus"),
        (f"{SHOP}:order_cancelled", "tests.asyncapi_shop:order_cancelled takes arguments"),
        (f"{SHOP}:PAYMENT_FAILED.title", "has no attribute 'PAYMENT_FAILED.title'"),
    ],
)
def test_a_bad_target_is_one_line_and_exit_2(
    target: str, expected: str, tmp_path: Path, env: dict[str, str]
) -> None:
    """A missing module or attribute, or something that is no Bus, is a usage error: exit 2,
    one line naming it, no traceback."""
    result = choreo("asyncapi", target, cwd=tmp_path, env=env)
    assert (2, "") == (result.returncode, result.stdout)
    lines = result.stderr.strip().splitlines()
    assert 1 == len(lines), result.stderr
    assert expected in lines[0]


def test_a_missing_subject_names_the_registry(tmp_path: Path, env: dict[str, str]) -> None:
    """A subject the registry does not hold is one line naming it and the registry, exit 1;
    without --registry or a codec, the configured registry is the one read."""
    other = f"sqlite:///{tmp_path}/empty.db"
    result = choreo(
        "asyncapi", f"{SHOP}:shipping", cwd=tmp_path, env={**env, "CHOREO_REGISTRY_URL": other}
    )
    assert 1 == result.returncode
    assert [
        f"error: subject 'shipping-value' not found in {other}; register it (choreo schema "
        "register) or pass --registry URL"
    ] == result.stderr.strip().splitlines()


def test_a_list_of_other_things_is_refused(tmp_path: Path, env: dict[str, str]) -> None:
    """A list that holds something other than buses is a usage error naming what it holds."""
    (tmp_path / "mixed.py").write_text("from broker import Bus\nbuses = [Bus('memory://'), 3]\n")
    result = choreo("asyncapi", "mixed:buses", cwd=tmp_path, env=env)
    assert 2 == result.returncode
    assert "mixed:buses is a list holding int, not a Bus" in result.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fetch(url: str) -> tuple[str, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.headers["content-type"], response.read().decode()


def test_serve_shows_the_page_and_the_raw_document(tmp_path: Path, env: dict[str, str]) -> None:
    """``choreo asyncapi serve`` serves the page and the document as JSON and YAML; a second
    one on the same port says the port is taken in one line and exits 1."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "choreo",
            "asyncapi",
            "serve",
            f"{SHOP}:services",
            "--port",
            str(port),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                kind, body = fetch(f"{base}/asyncapi.json")
                break
            except OSError:
                assert server.poll() is None, server.communicate()[1]
                assert time.monotonic() < deadline, "the page did not come up"
                time.sleep(0.1)
        document = json.loads(body)
        page_kind, page = fetch(f"{base}/")
        yaml_kind, as_yaml = fetch(f"{base}/asyncapi.yaml")
        busy = choreo(
            "asyncapi", "serve", f"{SHOP}:services", "--port", str(port), cwd=tmp_path, env=env
        )
    finally:
        server.terminate()
        out, _ = server.communicate(timeout=30)
    assert ("application/json", "text/html", "application/yaml") == tuple(
        k.split(";")[0] for k in (kind, page_kind, yaml_kind)
    )
    assert document == yaml.safe_load(as_yaml)
    assert all(f'id="channel-{c}"' in page for c in document["channels"])
    assert all(f'id="message-{m}"' in page for m in document["components"]["messages"])
    assert f"on http://127.0.0.1:{port}/" in out
    assert 1 == busy.returncode
    taken = f"127.0.0.1:{port}: Address already in use; stop what uses it or choose another --port"
    assert [f"error: cannot listen on {taken}"] == busy.stderr.strip().splitlines()


def test_the_docs_example_works_as_written(tmp_path: Path, env: dict[str, str]) -> None:
    """docs/asyncapi.md's application, saved as the file it names, gives with the command shown
    a document the parser accepts."""
    text = (ROOT / "docs" / "asyncapi.md").read_text()
    module = re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)[0]
    command = re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M)[0].splitlines()[0]
    name = re.search(r"choreo asyncapi (\w+):", command)
    assert name is not None, command
    (tmp_path / f"{name.group(1)}.py").write_text(module)
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", command],
        cwd=tmp_path,
        env={**env, "PATH": f"{Path(sys.executable).parent}:{env['PATH']}"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert 0 == result.returncode, result.stderr
    written = [p for p in tmp_path.iterdir() if p.suffix in (".yaml", ".json")]
    assert 1 == len(written), command
    (verdict,) = parse(written[0])
    assert (True, []) == (verdict["parsed"], verdict["errors"])
