"""Every Python block in the README and docs/ runs, so the examples cannot rot."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for index, match in enumerate(BLOCK.finditer(doc.read_text())):
            found.append((f"{doc.relative_to(ROOT)}#{index + 1}", match.group(1)))
    return found


@pytest.mark.parametrize(("where", "code"), _blocks(), ids=[w for w, _ in _blocks()])
def test_python_block_runs(where: str, code: str, tmp_path: Path) -> None:
    """The block runs to completion in a fresh directory."""
    if "# doc: not run" in code:
        pytest.fail(f"{where} is marked not run; make it runnable")
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert 0 == result.returncode, f"{where} failed:\n{result.stderr[-3000:]}"


BASH = re.compile(r"^```bash\n(.*?)^```", re.S | re.M)
README_BLOCKS = [
    (f"README.md#bash{index + 1}", m.group(1))
    for index, m in enumerate(BASH.finditer((ROOT / "README.md").read_text()))
    if "pip install" not in m.group(1) and "# not run by tests:" not in m.group(1)
]


@pytest.mark.parametrize(("where", "script"), README_BLOCKS, ids=[w for w, _ in README_BLOCKS])
def test_readme_shell_block_runs(where: str, script: str, tmp_path: Path) -> None:
    """Each README shell block (other than installs and long-running servers) succeeds as is."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("CHOREO_BROKER_URL", None)
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert 0 == result.returncode, (
        f"{where} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    )


YAML = re.compile(r"^```yaml\n(.*?)^```", re.S | re.M)
SAGA_BLOCKS = [
    (f"{doc.relative_to(ROOT)}#yaml{index + 1}", m.group(1))
    for doc in DOCS
    for index, m in enumerate(YAML.finditer(doc.read_text()))
    if "sagas:" in m.group(1)
]


@pytest.mark.parametrize(("where", "text"), SAGA_BLOCKS, ids=[w for w, _ in SAGA_BLOCKS])
def test_saga_definition_blocks_are_valid(where: str, text: str) -> None:
    """Every saga definition shown in the docs loads without an error."""
    from saga_monitor import parse_definitions

    assert parse_definitions(text, file=where).sagas


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_registry_quickstart_runs_against_a_served_registry(tmp_path: Path) -> None:
    """docs/registry.md's two shell blocks: serve, then register/list/show/curl, as written
    (only the port differs)."""
    import time
    import urllib.request

    serve, register = BASH.findall((ROOT / "docs" / "registry.md").read_text())[:2]
    port = str(_free_port())
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    server = subprocess.Popen(
        ["bash", "-c", "exec " + serve.strip().replace("8081", port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/subjects", timeout=2).read()
                break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode() if server.stderr else ""
                assert time.monotonic() < deadline, "the registry did not come up"
                time.sleep(0.2)
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", register.replace("8081", port)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert 0 == result.returncode, result.stderr[-3000:]
    assert '"subject":"orders-value"' in result.stdout.replace(" ", "")
