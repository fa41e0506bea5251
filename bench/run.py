"""Run every benchmark suite and write one Markdown table into the README.

    python -m bench.run                 # all suites, then update README.md
    python -m bench.run embedded outbox # some suites
    python -m bench.run --table-only    # re-render the README table from bench/results/*.json

Each suite is a module that writes ``bench/results/<name>.json``: a list of rows with ``suite``,
``backend``, ``metric`` and either ``value`` alone, or ``choreograph`` with a baseline measured
in the same run (``raw`` client, ``baseline``) and optionally ``faststream``; rows measured in
interleaved rounds hold medians, ``rounds`` and the ``spread`` of the per-round ratios (or of
the milliseconds added, for latencies), shown in brackets after the ratio.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parent.parent
RESULTS = Path(__file__).parent / "results"
README = ROOT / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"

SUITES = {
    "embedded": "bench.embedded",
    "kafka": "bench.brokers.kafka",
    "rabbitmq": "bench.brokers.rabbitmq",
    "nats": "bench.brokers.nats",
    "registry": "bench.registry",
    "outbox": "bench.outbox",
    "saga": "bench.saga",
}


def run_suites(names: list[str]) -> dict[str, str]:
    """Run the suites one after the other (they share two cores); returns failures."""
    failures = {}
    for name in names:
        module = SUITES[name]
        print(f"--- {name} ({module})", flush=True)
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", module], cwd=ROOT, check=False)
        print(f"--- {name}: exit {result.returncode} in {time.monotonic() - started:.0f}s")
        if result.returncode != 0:
            failures[name] = f"exit {result.returncode}"
    return failures


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value < 100:
        return f"{value:.2f}"
    return f"{value:,.0f}"


def _ratio(row: dict[str, Any]) -> str:
    ours = row.get("choreograph")
    base = row.get("raw", row.get("baseline"))
    if not ours or not base:
        return "-"
    spread = row.get("spread")
    if "ms" in row["metric"]:  # latency: lower is better, show what we add
        text = f"{ours - base:+.2f} ms"
        return f"{text} ({spread[0]:+.2f}..{spread[1]:+.2f})" if spread else text
    text = f"{ours / base:.2f}x"
    return f"{text} ({spread[0]:.2f}-{spread[1]:.2f})" if spread else text


def _metric(row: dict[str, Any]) -> str:
    """The metric cell; a ceiling row also says how many times our single publish the
    ceiling is (whether 3x single is reachable at all)."""
    times = row.get("ceiling_x_single")
    return row["metric"] if times is None else f"{row['metric']}; ceiling = {times:.2f}x single"


def render(rows: list[dict[str, Any]]) -> str:
    """The Markdown table for ``rows``."""
    lines = [
        "| suite | backend | metric | choreograph | baseline (same run) | ratio (spread) "
        "| FastStream |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        ours = row.get("choreograph", row.get("value"))
        base = row.get("raw", row.get("baseline"))
        lines.append(
            f"| {row['suite']} | {row['backend']} | {_metric(row)} | {_fmt(ours)} | "
            f"{_fmt(base)} | {_ratio(row)} | {_fmt(row.get('faststream'))} |"
        )
    machine = (
        f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}"
    )
    lines.append("")
    lines.append(
        f"_Measured {time.strftime('%Y-%m-%d')} on {machine}; reproduce with "
        "`python -m bench.run` (results in `bench/results/`)._"
    )
    return "\n".join(lines)


def load_rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name in SUITES:
        path = RESULTS / f"{name}.json"
        if path.exists():
            rows.extend(json.loads(path.read_text()))
    return rows


def update_readme(table: str) -> None:
    text = README.read_text()
    if START not in text:
        raise SystemExit(f"README.md has no {START} marker")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{START}\n{table}\n{END}{tail}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description="Run benchmark suites, then update README.md."
    )
    parser.add_argument("suites", nargs="*", metavar="SUITE", help=f"{', '.join(SUITES)} (all)")
    parser.add_argument(
        "--table-only", action="store_true", help="re-render the table from bench/results/"
    )
    args = parser.parse_args(argv)
    unknown = [n for n in args.suites if n not in SUITES]
    if unknown:
        parser.error(f"unknown suite(s) {unknown}; choose from {sorted(SUITES)}")
    names = args.suites or list(SUITES)
    failures = {} if args.table_only else run_suites(names)
    update_readme(render(load_rows()))
    for name, why in failures.items():
        print(f"suite {name} failed: {why}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
