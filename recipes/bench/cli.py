"""``python -m recipes bench [--db-url URL ...] [--tests N] [--runs K] [--rounds R] [--json PATH]``.

Prints, for each database, the in-process table (median ms per test and ratio to the inline
recipe), the pytest-suite table (ms per test above the no-database suite: N tests per suite,
minimum of K interleaved runs, with the spread between runs), on PostgreSQL where the time
goes, and at the end the targets with their verdicts (:mod:`recipes.bench.targets`), with the
machine it ran on. ``--json`` also writes the figures: ``docs/bench/results.json`` feeds the
benchmark page and the chart in chapter 05. ``--quick`` is a smoke run (a few tests, two runs,
a few rounds, no warm-up): its figures mean nothing.
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
from typing import Any

from sqlalchemy import text

from ..databases import TestDatabase, dialect_of, make_engine, mask, provision, resolve_urls
from ..janitor import run_coroutine
from .breakdown import breakdown
from .strategies import measure
from .suites import base_size, run_suites
from .targets import targets
from .xdist import run_workers

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


def _table(headers: list[str], rows: list[list[str]], left: int = 1) -> str:
    """A plain-text table: the first ``left`` columns aligned left, the figures right."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    fmt = lambda row: " | ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))  # noqa: E731
    return "\n".join([fmt(headers), "-+-".join("-" * w for w in widths), *map(fmt, rows)])


def _plus_minus(value: float | None) -> str:
    return "-" if value is None else f"± {value:.2f}"


def _bench(args: argparse.Namespace) -> int:
    quick = args.quick
    tests = args.tests if args.tests is not None else (4 if quick else 1000)
    runs = args.runs if args.runs is not None else (2 if quick else 5)
    rounds = args.rounds if args.rounds is not None else (3 if quick else 300)
    only = [name.strip() for name in (args.suites or "").split(",") if name.strip()]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="platformdirs")
        urls = resolve_urls(args.db_url, None, None) if args.db_url else ["sqlite+aiosqlite://"]
    report: dict[str, Any] = {
        "machine": machine(),
        "command": "python -m recipes bench " + " ".join(mask(a) for a in sys.argv[2:]),
        "tests": tests, "base_tests": base_size(tests) if tests > 1 else 0, "runs": runs,
        "rounds": rounds, "backends": {},
    }
    servers: dict[str, str] = {}
    report["machine"]["databases"] = servers
    print(f"machine: {report['machine']}")
    verdicts = []
    for raw in urls:
        print(f"\n== {dialect_of(raw)}: {mask(raw)}", flush=True)
        database = provision(raw)  # a throwaway database beside the named one, as the plugin does
        try:
            servers[dialect_of(raw)] = server_version(database)
            print(f"server: {servers[dialect_of(raw)]}")
            strategies = measure(database, rounds=rounds, warmup=max(10, rounds // 10))
            print(f"per test, in process, interleaved, median of {rounds} rounds:")
            print(_table(
                ["strategy", "ms", "spread", "x (a)"],
                [[m.strategy, f"{m.median_ms:.2f}", _plus_minus(m.spread_ms), f"{m.ratio:.2f}"]
                 for m in strategies],
            ), flush=True)
            suites = []
            if tests:
                url = database.url.render_as_string(hide_password=False)
                progress = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
                suites = run_suites(database.dialect, url, tests, runs=runs, only=only, progress=progress,
                                    warmup=not quick)
                print(f"\n{tests} tests per suite through pytest (and {base_size(tests)} for the fixed "
                      f"costs), minimum of {runs} interleaved runs:")
                inline = next((s.per_test_ms for s in suites if s.suite == "inline savepoint recipe"), None)
                print(_table(
                    ["suite", "loop", f"wall s ({tests})", "ms/test above no-db", "spread", "x inline",
                     "pytest CPU ms/test"],
                    [[s.suite, s.loop, f"{s.wall_s:.2f}",
                      "-" if s.per_test_ms is None else f"{s.per_test_ms:.2f}",
                      _plus_minus(s.spread_ms),
                      "-" if s.per_test_ms is None or not inline or inline <= 0 else f"{s.per_test_ms / inline:.2f}",
                      "-" if s.cpu_ms is None else f"{s.cpu_ms:.2f}"]
                     for s in suites],
                ), flush=True)
            workers = []
            if tests and args.workers:
                # the runs name what the user named (an embedded server: the one started here)
                named = raw if raw != "embedded-postgres" else database.url.set(
                    database="postgres").render_as_string(hide_password=False)
                worker_runs = runs if quick else max(3, runs)
                workers = run_workers(database.dialect, named, tests, runs=worker_runs, warmup=not quick,
                                      progress=lambda line: print(line, file=sys.stderr, flush=True))
                print(f"\npytest-xdist: {tests} database tests (db_session, session loop), wall time of "
                      f"the whole command, minimum of {worker_runs} interleaved runs:")
                print(_table(
                    ["workers", "wall s", "spread", "x (-n 0)", "CPU s: pytest", "workers", "rest of machine",
                     "cores busy"],
                    [[f"-n {w.workers}", f"{w.wall_s:.2f}",
                      "-" if w.spread_s is None else f"± {w.spread_s:.2f}",
                      "-" if w.speedup is None else f"{w.speedup:.2f}",
                      *("-" if v is None else f"{v:.2f}"
                        for v in (w.pytest_cpu_s, w.workers_cpu_s, w.rest_cpu_s, w.cores))] for w in workers],
                ), flush=True)
                print("(CPU: of the run that counts; pytest is the controller, or the only process under "
                      "-n 0; the rest is the machine's other busy time: the database server, and others)")
            layers = breakdown(database, rounds=rounds) if database.dialect == "postgresql" else {}
            if layers:
                print(f"\nwhere the time goes (PostgreSQL), median of {rounds} rounds, interleaved:")
                rows = []
                for group in dict.fromkeys(layer["group"] for layer in layers.values()):
                    rows.append([f"[{group}]", "", "", ""])
                    rows += [[name, f"{layer['ms']:.2f}", _plus_minus(layer["spread_ms"]), f"{layer['cpu_ms']:.2f}"]
                             for name, layer in layers.items() if layer["group"] == group]
                print(_table(["layer", "ms", "spread", "client CPU ms"], rows), flush=True)
        finally:
            database.close()
        found = targets(dialect_of(raw), strategies, suites, workers)
        verdicts += found
        report["backends"][dialect_of(raw)] = {
            "strategies": [asdict(m) for m in strategies],
            "suites": [asdict(s) for s in suites],
            "breakdown": layers,
            "xdist": [asdict(w) for w in workers],
            "targets": [asdict(t) for t in found],
        }
    if verdicts:
        print("\ntargets (met or not only where the figures are further from the limit than their spread):")
        print(_table(["database", "target", "this run", "verdict"],
                     [[t.backend, t.target, t.figure, t.verdict] for t in verdicts], left=4))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.json}", file=sys.stderr)
    return 0


def bench_command(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    add = parser.add_argument
    add("--db-url", action="append", metavar="URL",
        help="a database to measure on; repeat for several (default: sqlite+aiosqlite://)")
    add("--tests", type=int, metavar="N",
        help="tests per pytest suite; 0 skips the suites (default: 1000)")
    add("--runs", "--repeat", type=int, dest="runs", metavar="K",
        help="interleaved runs of each suite, the minimum counts (default: 5)")
    add("--rounds", type=int, metavar="R",
        help="timed rounds of the in-process strategies and of the breakdown (default: 300)")
    add("--suites", metavar="NAMES",
        help='only these suites, comma-separated (e.g. "inline savepoint recipe,recipes db_session"); '
             "the no-database ones always run")
    add("--no-workers", action="store_false", dest="workers",
        help="skip the pytest-xdist runs (the suite with 0, 1 and 2 workers)")
    add("--quick", action="store_true",
        help="a smoke run: 4 tests, 2 runs, 3 rounds unless given, no warm-up (its figures mean nothing)")
    add("--json", metavar="PATH", help="also write the figures as JSON")
    return _bench
