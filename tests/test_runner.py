"""The notebook runner's verdicts, each from a real run of a small notebook in tests/notebooks/.

Every way a chapter can go wrong has a notebook that goes wrong that way; the runner must say
so in one line and fail. Tests that start a kernel are marked ``notebooks``.

The recipe cells copy ``recipes.sqlite:_on_begin``, two lines of SQLAlchemy's documented SQLite
fix that are unlikely to change; if they do, copy the new source into ``passing.ipynb``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from recipes.runner import check_notebook, execute_notebook

NOTEBOOKS = Path(__file__).parent / "notebooks"
SQLITE = "sqlite+aiosqlite://"  # explicit, so a RECIPES_DB_URL set for the suite does not apply


@pytest.fixture(scope="module")
def copies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic notebooks copied out of the repository: a kernel's pytest run there must
    not pick up this suite's own conftest.py, as it would from tests/notebooks/."""
    folder = tmp_path_factory.mktemp("notebooks")
    for notebook in NOTEBOOKS.glob("*.ipynb"):
        shutil.copy(notebook, folder)
    return folder


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "recipes", "run", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


def outputs(path: Path, cell: int) -> str:
    """The text a cell (numbered from 1, as the runner numbers them) printed."""
    found = nbformat.read(path, as_version=4).cells[cell - 1].outputs
    return "".join(output.get("text", "") for output in found)


@pytest.mark.notebooks
def test_a_passing_notebook_is_ok_and_the_table_says_so(tmp_path: Path, copies: Path) -> None:
    notebook = copies / "passing.ipynb"
    done = run_cli(str(notebook), "--db-url", SQLITE, "--output-dir", str(tmp_path))

    assert done.returncode == 0, done.stdout + done.stderr
    header, _, row = done.stdout.splitlines()[:3]
    assert [cell.strip() for cell in header.split("|")] == [
        "notebook", "cells", "tests passed", "seconds", "verdict"
    ]
    name, cells, passed, _, verdict = [cell.strip() for cell in row.split("|")]
    assert (name, cells, passed, verdict) == ("passing.ipynb", "7", "2", "ok")
    assert "[1/1] passing.ipynb ... 7 cells, 2 tests passed" in done.stderr
    # The executed copy keeps the outputs, and the first cell names the database.
    assert outputs(tmp_path / "passing.ipynb", 2) == (
        "This chapter runs on: sqlite "
        "(sqlite+aiosqlite://, a throwaway SQLite database in memory)\n"
    )


@pytest.mark.notebooks
def test_db_url_reaches_the_kernel(tmp_path: Path, copies: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/app.db"
    result = execute_notebook(copies / "passing.ipynb", db_url=url, output_dir=tmp_path)

    assert result.ok, result.problems
    assert "tests run in app_test_" in outputs(tmp_path / "passing.ipynb", 2)


@pytest.mark.notebooks
def test_an_unexpected_failure_fails_and_stops_the_notebook(copies: Path) -> None:
    result = execute_notebook(copies / "unexpected_error.ipynb", db_url=SQLITE)

    assert not result.ok
    [problem] = result.problems
    assert problem.startswith("cell 3: unexpected error: FAILED ")
    assert "test_wrong_sum" in problem
    assert result.cells == 2  # the cell after the failure never ran


@pytest.mark.notebooks
def test_a_cell_marked_to_fail_that_passes_fails_the_run(copies: Path) -> None:
    result = execute_notebook(copies / "expected_failure_passes.ipynb", db_url=SQLITE)

    assert result.problems == [
        "cell 2: marked to fail with 'ZeroDivisionError', but it ran without error"
    ]


@pytest.mark.notebooks
def test_a_cell_that_fails_for_another_reason_fails_the_run(copies: Path) -> None:
    result = execute_notebook(copies / "wrong_reason.ipynb", db_url=SQLITE)

    assert result.problems == ["cell 2: failed, but not with 'IntegrityError' (KeyError: 'users')"]


@pytest.mark.notebooks
def test_a_hanging_cell_fails_when_the_timeout_expires(copies: Path) -> None:
    start = time.monotonic()
    result = execute_notebook(copies / "hanging.ipynb", db_url=SQLITE, timeout=2)

    assert result.problems == ["cell 2: still running after 2 s"]
    assert time.monotonic() - start < 30  # the kernel was killed, not waited for


@pytest.mark.notebooks
def test_a_cell_marked_with_timeouts_gets_that_many(copies: Path) -> None:
    """A measuring cell may take several times the timeout; the mark says how many."""
    notebook = nbformat.read(copies / "hanging.ipynb", as_version=4)
    notebook.cells[1].source = "import time\n\ntime.sleep(3)"
    notebook.cells[1].metadata["recipes"] = {"timeouts": 3}
    nbformat.write(notebook, copies / "measuring.ipynb")

    assert execute_notebook(copies / "measuring.ipynb", db_url=SQLITE, timeout=2).problems == []
    del notebook.cells[1].metadata["recipes"]
    nbformat.write(notebook, copies / "measuring.ipynb")
    result = execute_notebook(copies / "measuring.ipynb", db_url=SQLITE, timeout=2)
    assert result.problems == ["cell 2: still running after 2 s"]


@pytest.mark.notebooks
def test_a_drifted_recipe_cell_fails_the_run(copies: Path) -> None:
    result = execute_notebook(copies / "drifted.ipynb", db_url=SQLITE)

    [problem] = result.problems
    assert problem.startswith("cell 3 (recipe recipes.sqlite:_on_begin): differs from ")
    assert """at line 2 of the recipe: expected 'connection.exec_driver_sql("BEGIN")'""" in problem
    assert result.cells == 2  # drift is found before the run; the notebook still runs


def test_a_missing_notebook_is_one_line_and_exit_status_2(tmp_path: Path) -> None:
    done = run_cli(str(tmp_path / "nope.ipynb"))

    assert done.returncode == 2
    last_line = done.stderr.strip().splitlines()[-1]
    assert last_line == f"recipes: no such notebook: {tmp_path / 'nope.ipynb'}"


def test_the_synthetic_notebooks_have_only_the_problems_they_are_for() -> None:
    clean = ["passing", "unexpected_error", "expected_failure_passes", "wrong_reason", "hanging"]
    for name in clean:
        assert check_notebook(NOTEBOOKS / f"{name}.ipynb") == [], name
    assert len(check_notebook(NOTEBOOKS / "drifted.ipynb")) == 1


def test_failure_marks_come_in_pairs_and_recipes_must_import(tmp_path: Path) -> None:
    tagged_only = new_code_cell(
        "1 / 0", metadata={"tags": ["raises-exception"], "recipes": {"why": "It divides by 0."}}
    )
    expect_only = new_code_cell("1 / 0", metadata={"recipes": {"expect": "ZeroDivisionError"}})
    missing = new_code_cell("def f(): ...", metadata={"recipes": {"recipe": "recipes.nope:f"}})
    path = tmp_path / "marks.ipynb"
    nbformat.write(new_notebook(cells=[tagged_only, expect_only, missing]), path)

    problems = check_notebook(path)

    assert problems[0].startswith("cell 3 (recipe recipes.nope:f): cannot read the recipe")
    assert problems[1:] == [
        "cell 1: tagged raises-exception, but no recipes.expect text",
        "cell 2: has recipes.expect but not the raises-exception tag",
    ]


def _exercise_notebook(path: Path, source: str, shipped: str) -> Path:
    """A notebook whose exercise cell was shipped as ``shipped`` and now reads ``source``."""
    from recipes.runner import exercise_fingerprint

    marks = {"expect": "ZeroDivisionError", "exercise": exercise_fingerprint(shipped),
             "why": "It divides by zero until the learner fixes it."}
    cell = new_code_cell(source, metadata={"tags": ["raises-exception"], "recipes": marks})
    nbformat.write(new_notebook(cells=[cell]), path)
    return path


@pytest.mark.notebooks
def test_an_exercise_as_shipped_must_fail_for_its_reason(tmp_path: Path) -> None:
    shipped = "1 / 0  # Exercise: make it 1 / 1"
    failing = execute_notebook(_exercise_notebook(tmp_path / "a.ipynb", shipped, shipped))
    # The fingerprint ignores blank lines around the source, so a stray newline changes nothing.
    passing = execute_notebook(_exercise_notebook(tmp_path / "b.ipynb", "\n1 + 1\n", "1 + 1"))

    assert (failing.ok, failing.notes) == (True, [])
    assert passing.problems == ["cell 1: marked to fail with 'ZeroDivisionError', but it ran without error"]


@pytest.mark.notebooks
def test_an_exercise_the_learner_solved_is_reported_as_solved(tmp_path: Path) -> None:
    notebook = _exercise_notebook(tmp_path / "solved.ipynb", "1 / 1", shipped="1 / 0")
    done = run_cli(str(notebook), "--output-dir", str(tmp_path / "out"))

    assert done.returncode == 0, done.stdout + done.stderr
    assert "solved.ipynb: cell 1: the exercise passes now: solved" in done.stdout
    assert "marked to fail" not in done.stdout


@pytest.mark.notebooks
def test_an_exercise_the_learner_is_still_working_on_says_so(tmp_path: Path) -> None:
    result = execute_notebook(_exercise_notebook(tmp_path / "wip.ipynb", "{}['x']", shipped="1 / 0"))

    assert result.problems == ["cell 1: exercise not solved yet: KeyError: 'x'"]


def test_an_exercise_must_be_marked_to_fail_until_a_learner_edits_it(tmp_path: Path) -> None:
    from recipes.runner import exercise_fingerprint

    shipped = new_code_cell("1 / 0", metadata={"recipes": {"exercise": exercise_fingerprint("1 / 0")}})
    solved = new_code_cell("1 / 1", metadata={"recipes": {"exercise": exercise_fingerprint("1 / 0")}})
    path = tmp_path / "unmarked.ipynb"
    nbformat.write(new_notebook(cells=[shipped, solved]), path)

    # The shipped exercise needs its marks; the learner's, with the tag removed, is theirs.
    assert check_notebook(path) == ["cell 1: an exercise must be marked to fail until it is solved"]


def test_commands_import_only_what_they_need() -> None:
    """--help and bench work without the notebooks extra; run says which extra it needs."""
    blocked = "import sys; sys.modules['nbformat'] = None; from recipes.__main__ import main; "

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        code = blocked + f"sys.exit(main({list(args)!r}))"
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)

    helped, bench, run = cli("--help"), cli("bench", "--help"), cli("run")

    assert helped.returncode == 0 and "bench" in helped.stdout, helped.stderr
    assert bench.returncode == 0 and "--db-url" in bench.stdout, bench.stderr
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        "recipes: the run command needs Jupyter's kernel tools (nbformat is not installed): "
        'pip install "testing-async-sqlalchemy[notebooks]"'
    ]
