"""The dependency direction of the packages, read from their sources (every import statement,
lazy ones inside functions included): ``broker`` <- ``connectors``, ``saga_monitor`` <-
``choreo``, with ``schemas`` on the side (it uses broker's SQL store base and URL masking, and
broker never imports it; tests/test_sqlstore.py pins which broker modules), and no arrow back."""

from __future__ import annotations

import ast
import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("broker", "schemas", "connectors", "saga_monitor", "choreo")
#: What each package may import of the others; everything else is an arrow back.
ALLOWED = {
    "schemas": {"broker"},
    "broker": set(),
    "connectors": {"schemas", "broker"},
    "saga_monitor": {"schemas", "broker"},
    "choreo": {"schemas", "broker", "connectors", "saga_monitor"},
}


def imported_packages(path: Path) -> set[str]:
    """The top-level names of our packages that the module at ``path`` imports."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & set(PACKAGES)


def arrows_back(package: str) -> list[str]:
    """``module -> package`` for every import ``package`` must not make."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for target in sorted(imported_packages(path) - ALLOWED[package] - {package}):
            found.append(f"{path.relative_to(ROOT)} -> {target}")
    return found


@pytest.mark.parametrize("package", ["broker", "schemas", "connectors", "saga_monitor"])
def test_no_library_package_imports_the_cli(package: str) -> None:
    """No module of a library package imports ``choreo``: the CLI is the top layer only."""
    importing = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / package).rglob("*.py"))
        if "choreo" in imported_packages(path)
    ]
    assert [] == importing


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_follow_the_dependency_direction(package: str) -> None:
    """Each package imports only the packages below it."""
    assert [] == arrows_back(package)


def test_the_walk_sees_lazy_and_dotted_imports(tmp_path: Path) -> None:
    """An import inside a function and a dotted ``from`` import are both found."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    import choreo.cli\n\nfrom saga_monitor.model import X\n")
    assert {"choreo", "saga_monitor"} == imported_packages(module)


def test_the_wheel_ships_the_packages_and_no_development_code() -> None:
    """The wheel's package patterns take our five packages, and not devservers, bench or tests."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["packages"]["find"]["include"]
    folders = [p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()]
    shipped = {name for name in folders if any(fnmatch(name, pattern) for pattern in patterns)}
    assert set(PACKAGES) == shipped


#: The dead-letter suffix and the ``dlq*`` field names, as code spells them.
_DEAD_LETTER_NAMES = re.compile(r"\.dlq\b|\bdlq(?:reason|error|attempts|topic|group|time)\b")


def dead_letter_spellings(path: Path) -> list[str]:
    """``path:line`` of each string literal in the module (docstrings aside) that spells the
    ``.dlq`` suffix or a ``dlq*`` field name."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name}:{node.lineno}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
        and _DEAD_LETTER_NAMES.search(node.value)
    ]


def test_dead_letter_names_are_spelled_only_in_broker_deadletter() -> None:
    """The ``.dlq`` suffix and the ``dlq*`` fields are written in one module of the five
    packages, broker/deadletter.py; everything else (the CLI's dlq commands included) asks it."""
    spelled = [
        found
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if path != ROOT / "broker" / "deadletter.py"
        for found in dead_letter_spellings(path)
    ]
    assert [] == spelled


def test_the_spelling_check_sees_code_but_not_docstrings(tmp_path: Path) -> None:
    """A literal in code is found, a docstring mentioning orders.dlq is not."""
    module = tmp_path / "probe.py"
    module.write_text('"""About orders.dlq."""\n\nNAME = "orders.dlq"\nFIELD = "dlqerror"\n')
    assert ["probe.py:3", "probe.py:4"] == sorted(dead_letter_spellings(module))
