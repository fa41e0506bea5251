"""``choreo schema ...`` commands: output, exit codes, one-line errors."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from choreo.commands.schema import schema_app
from tests.schemas.conftest import LiveServer, free_port

ROOT = Path(__file__).resolve().parents[2]
V1 = {"type": "record", "name": "A", "fields": [{"name": "x", "type": "string"}]}
V2 = {
    "type": "record",
    "name": "A",
    "fields": [{"name": "x", "type": "string"}, {"name": "y", "type": "int", "default": 0}],
}
BREAKING = {"type": "record", "name": "A", "fields": [{"name": "z", "type": "int"}]}

runner = CliRunner()


@pytest.fixture(autouse=True)
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run each command in a fresh directory, so the embedded default registry is new."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CHOREO_REGISTRY_URL", raising=False)
    return tmp_path


def write(name: str, document: object) -> str:
    Path(name).write_text(json.dumps(document))
    return name


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(schema_app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_register_show_and_ls_on_the_embedded_default() -> None:
    """Without --registry, commands use sqlite:///.choreo/registry.db in the current directory."""
    assert (0, "registered orders-value version 1 (id 1)\n", "") == invoke(
        "register", "orders-value", write("v1.avsc", V1)
    )
    code, out, _ = invoke("ls", "--output", "json")
    assert (0, [{"subject": "orders-value", "version": 1, "id": 1, "type": "AVRO"}]) == (
        code,
        json.loads(out),
    )
    code, out, _ = invoke("show", "orders-value", "-o", "json")
    assert (0, V1) == (code, json.loads(json.loads(out)["schema"]))
    assert Path(".choreo/registry.db").exists()


def test_check_gives_the_verdict_and_exit_code() -> None:
    """check exits 0 when compatible and 1 with the reasons when not."""
    invoke("register", "orders-value", write("v1.avsc", V1))
    good = invoke("check", "orders-value", write("v2.avsc", V2))
    code, out, _ = invoke("check", "orders-value", write("bad.avsc", BREAKING), "-o", "json")
    assert (0, "compatible") == (good[0], good[1].split(":")[0])
    assert (1, False) == (code, json.loads(out)["is_compatible"])
    assert json.loads(out)["messages"]


def test_config_reads_and_sets_levels() -> None:
    """--level sets a subject's level (creating the embedded registry) and config shows the
    global level."""
    assert (0, "orders-value: FULL_TRANSITIVE\n", "") == invoke(
        "config", "orders-value", "--level", "full_transitive"
    )
    assert (0, "global: BACKWARD\n", "") == invoke("config")


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (("register", "s", "missing.avsc"), 2, "cannot read schema file missing.avsc"),
        (("register", "s", "bad.avsc"), 2, "invalid Avro schema"),
        (("show", "nobody"), 1, "subject 'nobody' not found"),
        (("config", "--level", "sideways"), 2, "invalid compatibility level 'sideways'"),
        (("ls", "--registry", "ftp://nowhere"), 2, "unknown registry storage URL"),
    ],
)
def test_user_mistakes_print_one_line_and_exit_with_the_right_code(
    args: tuple[str, ...], code: int, needle: str
) -> None:
    """Each mistake prints a single error line, no traceback, and exits 2 (usage) or 1."""
    write("bad.avsc", {"type": "record", "name": "X"})
    invoke("config", "other-value", "--level", "full")  # the embedded registry exists
    exit_code, _, err = invoke(*args)
    assert (code, 1) == (exit_code, len(err.strip().splitlines())), err
    assert needle in err


def test_unreachable_registry_url_is_one_line_exit_1() -> None:
    """A registry URL nobody serves gives one line naming the URL."""
    url = f"http://127.0.0.1:{free_port()}"
    exit_code, _, err = invoke("ls", "--registry", url)
    assert (1, 1) == (exit_code, len(err.strip().splitlines()))
    assert url in err


def test_commands_talk_to_a_server_given_by_the_environment(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CHOREO_REGISTRY_URL points the commands at a running server."""
    monkeypatch.setenv("CHOREO_REGISTRY_URL", live.url)
    invoke("register", "orders-value", write("v1.avsc", V1))
    assert ["orders-value"] == asyncio.run(live.registry.subjects())


def test_real_process_prints_json_and_fails_cleanly(workdir: Path) -> None:
    """The app runs as a real process: JSON output on success, one line and exit 2 on a mistake."""
    write("v1.avsc", V1)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CHOREO_REGISTRY_URL", None)
    command = [sys.executable, "-c", "from choreo.commands.schema import schema_app; schema_app()"]
    ok = subprocess.run(
        [*command, "register", "orders-value", "v1.avsc", "--output", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    bad = subprocess.run(
        [*command, "register", "orders-value", "nope.avsc"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert (0, {"subject": "orders-value", "version": 1, "id": 1}) == (
        ok.returncode,
        json.loads(ok.stdout),
    )
    assert (2, 1) == (bad.returncode, len(bad.stderr.strip().splitlines())), bad.stderr
    assert "Traceback" not in bad.stderr


def test_registry_serve_runs_a_server_confluents_serializer_can_use(workdir: Path) -> None:
    """`registry serve` in its own process serves confluent-kafka's AvroSerializer."""
    import httpx
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable,
        "-c",
        "from choreo.commands.registry import registry_app; registry_app()",
        "serve",
        "--port",
        str(port),
        "--storage",
        f"sqlite:///{workdir}/served.db",
    ]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:  # wait for a real HTTP answer, not a fixed delay
            try:
                if httpx.get(f"{url}/", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                assert time.monotonic() < deadline, "registry serve did not answer in 30 s"
                time.sleep(0.05)
        client = SchemaRegistryClient({"url": url})
        ctx = SerializationContext("users", MessageField.VALUE)
        data = AvroSerializer(client, json.dumps(V1))({"x": "hello"}, ctx)
        assert {"x": "hello"} == AvroDeserializer(client)(data, ctx)
        assert ["users-value"] == client.get_subjects()
    finally:
        server.terminate()
        server.wait(timeout=10)
        if server.stderr:
            server.stderr.close()


def test_register_with_a_reference() -> None:
    """--reference NAME=SUBJECT:VERSION registers a schema that uses another subject's type."""
    invoke(
        "register",
        "address",
        write("address.avsc", {"type": "record", "name": "Address", "fields": []}),
    )
    customer = {"type": "record", "name": "Customer", "fields": [{"name": "a", "type": "Address"}]}
    code, out, err = invoke(
        "register",
        "customer-value",
        write("c.avsc", customer),
        "-r",
        "Address=address:1",
        "-o",
        "json",
    )
    assert (0, 2) == (code, json.loads(out)["id"]), err
    bad = invoke("register", "customer-value", "c.avsc", "--reference", "Address")
    assert (2, True) == (bad[0], "must look like NAME=SUBJECT:VERSION" in bad[2])


def test_schemas_imports_none_of_the_packages_that_depend_on_it() -> None:
    """Dependency direction: importing schemas loads no connectors or saga_monitor.

    (schemas sits beside broker and uses only its SQL store base and URL masking:
    tests/test_sqlstore.py pins that.)
    """
    code = (
        "import sys, schemas, schemas.server, schemas.codec\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('connectors', 'saga_monitor')))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert "[]" == result.stdout.strip(), result.stderr


PROTO_V1 = """syntax = "proto3";
package shop;
import "google/protobuf/timestamp.proto";
message Order { string id = 1; google.protobuf.Timestamp at = 2; }
"""


def test_register_show_and_check_a_protobuf_schema() -> None:
    """--type protobuf registers .proto text (well-known imports need no reference); show
    prints it; check refuses a type change outside its group with exit 1."""
    Path("order.txt").write_text(PROTO_V1)
    assert (0, "registered orders-value version 1 (id 1)\n", "") == invoke(
        "register", "orders-value", "order.txt", "--type", "protobuf"
    )
    code, out, _ = invoke("show", "orders-value")
    assert (0, True) == (code, "orders-value version 1 (id 1, PROTOBUF)" in out)
    assert "message Order" in out
    Path("v2.proto").write_text(PROTO_V1.replace("string id = 1", "int64 id = 1"))
    code, out, _ = invoke("check", "orders-value", "v2.proto")
    assert (1, True) == (code, "FIELD_SCALAR_KIND_CHANGED" in out)


def test_an_invalid_proto_file_is_one_line_and_exit_2() -> None:
    """protoc's reason, with its line, is the one-line error of a usage mistake."""
    Path("bad.proto").write_text('syntax = "proto3";\nmessage A { Missing m = 1; }\n')
    code, out, err = invoke("register", "bad-value", "bad.proto")
    assert (2, "") == (code, out)
    assert 'line 2:13: "Missing" is not defined' in err
    assert 1 == len(err.strip().splitlines())


@pytest.mark.parametrize("where", ["embedded", "server"])
def test_check_against_a_subject_that_does_not_exist_says_so(
    where: str, live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """check against a subject with no versions says in one line that there is nothing to check
    against (exit 0, as Confluent's registry answers compatible); with --version N it is one
    error line naming the subject and the version, exit 1. Over HTTP as on the embedded store."""
    if where == "server":
        monkeypatch.setenv("CHOREO_REGISTRY_URL", live.url)
    invoke("register", "orders-value", write("v1.avsc", V1))
    code, out, err = invoke("check", "ordres-value", write("v2.avsc", V2))
    expected = (
        "compatible: no subject ordres-value yet, so nothing to check against and any schema "
        "may be registered as its version 1; check the name with: choreo schema ls\n"
    )
    assert (0, expected, "") == (code, out.replace("\n", " ").rstrip() + "\n", err)
    _, listed, _ = invoke("check", "ordres-value", "v2.avsc", "-o", "json")
    assert (True, False) == (json.loads(listed)["is_compatible"], json.loads(listed)["exists"])
    code, out, err = invoke("check", "ordres-value", "v2.avsc", "--version", "1")
    lines = err.strip().splitlines()
    assert (1, "", 1) == (code, out, len(lines)), err
    assert lines[0].startswith(
        "error: no version 1 of subject 'ordres-value' to check against (Version 1 not found.)"
    )
