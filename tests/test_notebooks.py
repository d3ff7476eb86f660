"""The chapters: stored clean, teaching exactly what recipes/ ships, and passing on every database.

``test_chapter_runs`` executes each ``notebooks/NN_*.ipynb`` through the runner once per
database this test run is configured with (``--db-url``, ``RECIPES_DB_URL`` or the ini's
``recipes_db_url``, as for every other test), passing the URL on to the kernel, but MySQL:
the chapters teach SQLite and PostgreSQL, and only those in ``ON_MYSQL_TOO`` run on MySQL or
MariaDB, the configured one or the server :func:`recipes.notebook.mysql_url` finds (a
failure, not a skip, without one when ``RECIPES_REQUIRE_MYSQL=1``). On the
default database it checks the workbook's own run, the copies in ``docs/chapters/`` that
the ``executed_chapters`` fixture keeps fresh, instead of running the chapters a second time. Deselect the
slow part with ``-m "not notebooks"``.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from recipes import plugin
from recipes.databases import DEFAULT_URL, dialect_of, driver_of
from recipes.notebook import MYSQL_URL, mysql_url
from recipes.runner import PROJECT_ROOT, check_notebook, execute_notebook, exercise_fingerprint

CHAPTERS = sorted((PROJECT_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
by_chapter = pytest.mark.parametrize("chapter", CHAPTERS, ids=[path.stem for path in CHAPTERS])


MAX_CELL_LINES = 25  # a cell shows one idea; a longer one is split
DOCS = PROJECT_ROOT / "docs"


# Chapters that run on MySQL or MariaDB whatever this run is configured with: chapter 11 shows
# the three databases side by side. With RECIPES_REQUIRE_MYSQL=1 (CI) a missing server fails
# the run; otherwise that run is skipped, with the reason.
ON_MYSQL_TOO = {"11_scaling"}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # The raw URLs the plugin resolved for this run; "embedded-postgres" stays a name, and each
    # kernel provisions its own database from it. One URL per dialect: the chapters teach
    # asyncpg, whose messages they quote, so a second PostgreSQL driver does not run them.
    if "chapter_db_url" in metafunc.fixturenames:
        by_dialect: dict[str, str] = {}
        for url in metafunc.config.stash[plugin._URLS]:
            if dialect_of(url) not in by_dialect or driver_of(url) == "asyncpg":
                by_dialect[dialect_of(url)] = url
        # The chapters teach SQLite and PostgreSQL: MySQL runs only those that show it.
        mysql = by_dialect.pop("mysql", None)
        params = [pytest.param(chapter, url, id=f"{chapter.stem}-{dialect}")
                  for chapter in CHAPTERS for dialect, url in by_dialect.items()]
        params += [pytest.param(chapter, mysql, id=f"{chapter.stem}-mysql") if mysql else _on_mysql(chapter)
                   for chapter in CHAPTERS if chapter.stem in ON_MYSQL_TOO]
        metafunc.parametrize("chapter, chapter_db_url", params)


def _on_mysql(chapter: Path) -> object:
    """The chapter on the MySQL server notebook.mysql_url() finds; None if none answers."""
    try:
        url = mysql_url()
    except RuntimeError as exc:  # RECIPES_REQUIRE_MYSQL=1: fail the test, never skip it
        return pytest.param(chapter, f"error: {exc}", id=f"{chapter.stem}-mysql")
    marks = [] if url else [pytest.mark.skip(reason=f"no MySQL or MariaDB server answered; set {MYSQL_URL}")]
    return pytest.param(chapter, url, id=f"{chapter.stem}-mysql", marks=marks)


def _cells(chapter: Path, kind: str) -> list[tuple[int, str]]:
    cells = nbformat.read(chapter, as_version=4).cells
    return [(n, cell.source) for n, cell in enumerate(cells, start=1) if cell.cell_type == kind]


@by_chapter
def test_stored_without_outputs(chapter: Path) -> None:
    """Outputs belong in the executed copies under docs/chapters/, not in the repository."""
    notebook = nbformat.read(chapter, as_version=4)
    dirty = [
        number
        for number, cell in enumerate(notebook.cells, start=1)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not dirty, f"cells {dirty} carry outputs or execution counts: clear them, then commit"


@by_chapter
def test_recipe_cells_match_recipes_and_failure_marks_are_complete(chapter: Path) -> None:
    assert check_notebook(chapter) == []


@by_chapter
def test_code_cells_show_one_idea_each(chapter: Path) -> None:
    long = [(n, len(src.strip().splitlines())) for n, src in _cells(chapter, "code")
            if len(src.strip().splitlines()) > MAX_CELL_LINES]
    assert not long, f"(cell, lines) over {MAX_CELL_LINES} lines: {long}; split them"


@by_chapter
def test_cross_references_lead_somewhere(chapter: Path) -> None:
    """Every chapter a chapter mentions exists, and every page it links to is in docs/."""
    numbers = {path.name[:2] for path in CHAPTERS}
    text = "\n".join(src for _, src in _cells(chapter, "markdown") + _cells(chapter, "code"))
    # "chapter 04", "chapters 03 and 05", "chapters 00 to 02"
    mentioned = set(re.findall(r"\b[Cc]hapters? (\d\d)\b", text))
    mentioned |= set(re.findall(r"\b[Cc]hapters \d\d(?:, \d\d)* (?:and|to|or) (\d\d)\b", text))
    assert mentioned <= numbers, f"chapters {sorted(mentioned - numbers)} do not exist"
    pages = re.findall(r"\]\((\.\./[^)#\s]+\.md)(?:#[^)]*)?\)", text)
    missing = [page for page in pages if not (DOCS / "chapters" / page).resolve().is_file()]
    assert not missing, f"links to missing pages: {missing}"


@by_chapter
def test_the_chapter_uses_the_shared_helpers_instead_of_pasting_them(chapter: Path) -> None:
    cells = nbformat.read(chapter, as_version=4).cells
    # Recipe cells are exempt: they are the recipes' source, gc.collect() included.
    code = "\n".join(c.source for c in cells if c.cell_type == "code" and "recipe" not in c.metadata.get("recipes", {}))
    for pasted in ("def postgres_url(", "def unique_violation(", "PYTEST_OPTIONS", "gc.collect("):
        assert pasted not in code, f"{pasted!r}: use recipes.notebook instead"


@by_chapter
def test_the_exercise_is_marked_as_shipped(chapter: Path) -> None:
    """The exercise's fingerprint is that of its source, so that the runner can tell a learner's
    edit (solved, or not yet) from the shipped exercise (which must fail)."""
    cells = nbformat.read(chapter, as_version=4).cells
    exercises = [(n, c) for n, c in enumerate(cells, 1) if c.metadata.get("recipes", {}).get("exercise")]
    assert exercises, "every chapter has an exercise; mark it with recipes.exercise"
    for number, cell in exercises:
        expected = exercise_fingerprint(cell.source)
        assert cell.metadata["recipes"]["exercise"] == expected, (
            f"cell {number} changed: set its recipes.exercise to {expected!r}"
        )


@pytest.mark.notebooks
def test_chapter_runs(
    chapter: Path, chapter_db_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if chapter_db_url.startswith("error: "):
        pytest.fail(chapter_db_url.removeprefix("error: "))
    if chapter_db_url == DEFAULT_URL:
        # The workbook's own run, which executed_chapters keeps (executing it first if the copy
        # is missing, stale or failed): the same run, not done twice.
        copy = request.getfixturevalue("executed_chapters") / chapter.name
        assert nbformat.read(copy, as_version=4).metadata["recipes"]["problems"] == []
        return
    result = execute_notebook(chapter, db_url=chapter_db_url, output_dir=tmp_path)

    assert result.ok, "\n".join([*result.problems, f"executed copy: {result.output}"])
