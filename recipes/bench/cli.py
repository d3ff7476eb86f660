"""``python -m recipes bench [--db-url URL ...] [--tests N] [--rounds R] [--json PATH]``.

Prints, for each database, the in-process table (median ms per test and ratio to the inline
recipe) and the pytest-suite table (ms per test above the no-database suite), with the machine
it ran on. ``--json`` also writes the figures, for the chart in chapter 05.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from sqlalchemy import text

from ..databases import TestDatabase, dialect_of, make_engine, mask, provision, resolve_urls
from ..janitor import run_coroutine
from .breakdown import breakdown
from .strategies import measure
from .suites import run_suites

__all__ = ["bench_command", "machine"]


def machine() -> dict[str, str | int]:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count() or 0,
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
    }


def server_version(database: TestDatabase) -> str:
    """The database's own version string, for the record of what was measured."""
    query = "SELECT sqlite_version()" if database.dialect == "sqlite" else "SHOW server_version"

    async def ask() -> str:
        engine = make_engine(database.url)
        try:
            async with engine.connect() as connection:
                return f"{database.dialect} {await connection.scalar(text(query))}"
        finally:
            await engine.dispose()

    return run_coroutine(ask)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    fmt = lambda row: " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))  # noqa: E731
    return "\n".join([fmt(headers), "-+-".join("-" * w for w in widths), *map(fmt, rows)])


def _bench(args: argparse.Namespace) -> int:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="platformdirs")
        urls = resolve_urls(args.db_url, None, None) if args.db_url else ["sqlite+aiosqlite://"]
    report: dict[str, object] = {"machine": machine(), "tests": args.tests, "backends": {}}
    servers: dict[str, str] = {}
    report["machine"]["databases"] = servers  # type: ignore[index]
    print(f"machine: {report['machine']}")
    for raw in urls:
        print(f"\n== {dialect_of(raw)}: {mask(raw)}", flush=True)
        database = provision(raw)  # a throwaway database beside the named one, as the plugin does
        try:
            servers[dialect_of(raw)] = server_version(database)
            print(f"server: {servers[dialect_of(raw)]}")
            strategies = measure(database, rounds=args.rounds, warmup=max(10, args.rounds // 10))
            print(f"per test, in process, interleaved, median of {args.rounds} rounds:")
            print(_table(
                ["strategy", "ms", "x (a)"],
                [[m.strategy, f"{m.median_ms:.2f}", f"{m.ratio:.2f}"] for m in strategies],
            ))
            suites = []
            if args.tests:
                url = database.url.render_as_string(hide_password=False)
                suites = run_suites(database.dialect, url, args.tests, repeat=args.repeat)
                print(f"\n{args.tests} tests through pytest (and {2 * args.tests} for the slope), median of {args.repeat} runs:")
                inline = next(s.per_test_ms for s in suites if s.suite == "inline savepoint recipe")
                print(_table(
                    ["suite", "loop", f"wall s ({args.tests})", "ms/test above no-db", "x inline"],
                    [[s.suite, s.loop, f"{s.wall_s:.2f}",
                      "-" if s.per_test_ms is None else f"{s.per_test_ms:.2f}",
                      "-" if s.per_test_ms is None or not inline else f"{s.per_test_ms / inline:.2f}"]
                     for s in suites],
                ))
            layers = breakdown(database, rounds=args.rounds) if database.dialect == "postgresql" else {}
            if layers:
                print("\nwhere the time goes (PostgreSQL), median ms:")
                print(_table(["layer", "ms"], [[name, f"{ms:.2f}"] for name, ms in layers.items()]))
        finally:
            database.close()
        report["backends"][dialect_of(raw)] = {  # type: ignore[index]
            "strategies": [asdict(m) for m in strategies],
            "suites": [asdict(s) for s in suites],
            "breakdown": layers,
        }
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.json}", file=sys.stderr)
    return 0


def bench_command(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    add = parser.add_argument
    add("--db-url", action="append", metavar="URL",
        help="a database to measure on; repeat for several (default: sqlite+aiosqlite://)")
    add("--tests", type=int, default=300, metavar="N",
        help="tests per pytest suite; 0 skips the suites (default: %(default)s)")
    add("--rounds", type=int, default=300, metavar="R",
        help="timed rounds of the in-process strategies (default: %(default)s)")
    add("--repeat", type=int, default=3, metavar="K", help="runs of each suite (default: %(default)s)")
    add("--json", metavar="PATH", help="also write the figures as JSON")
    return _bench
