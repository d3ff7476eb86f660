"""The executed copies the site renders (``recipes.rendering``): the runner's outputs, with
the failure-on-purpose line and without IPython's and ipytest's machinery.

One real run of ``tests/notebooks/passing.ipynb`` (a kernel, about 5 s) gives the outputs;
the cases that need no kernel use a notebook built in the test.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from recipes.rendering import INTENDED_FAILURE_CLASS, readable_copy, source_stamp
from recipes.runner import DOCS_CHAPTERS, execute_notebook

NOTEBOOK = Path(__file__).parent / "notebooks" / "passing.ipynb"
MACHINERY = re.compile(r"ipykernel_\d+|\bt_[0-9a-f]{32}\.py|ipytest failed with exit_code|"
                       r"The ipytest magic cannot evaluate")


def _text(output: dict) -> str:
    """What an output shows, without colours."""
    if output["output_type"] == "stream":
        text = output["text"]
    elif output["output_type"] == "error":
        text = "\n".join(output["traceback"])
    else:
        text = str(output["data"].get("text/html", output["data"].get("text/plain", "")))
    return re.sub(r"\x1b\[[0-9;?]*[ -/]*[@-~]", "", text)


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> nbformat.NotebookNode:
    folder = tmp_path_factory.mktemp("rendering")
    shutil.copy(NOTEBOOK, folder)  # a kernel there does not pick up this suite's conftest.py
    result = execute_notebook(folder / NOTEBOOK.name, db_url="sqlite+aiosqlite://",
                              output_dir=folder / "out")
    assert result.ok, result.problems
    return nbformat.read(folder / "out" / NOTEBOOK.name, as_version=4)


@pytest.mark.notebooks
def test_a_failing_test_cell_shows_pytest_and_why_and_no_machinery(executed) -> None:
    cell = executed.cells[5]  # %%ipytest with a test that fails on purpose
    kinds = [output["output_type"] for output in cell.outputs]
    shown = "\n".join(_text(output) for output in cell.outputs)

    assert kinds[:2] == ["stream", "display_data"], kinds
    assert "1 failed" in shown and "assert (1 + 1) == 3" in shown
    assert f'<div class="{INTENDED_FAILURE_CLASS}"><strong>Fails on purpose.</strong> ' in shown
    assert cell.metadata["recipes"]["why"].replace("'", "&#x27;") in shown
    # The generated module is the notebook, the kernel's temp file the cell that ran.
    assert "FAILED passing.ipynb::test_fails_on_purpose" in shown
    assert f"In[{cell.execution_count}]:2: AssertionError" in shown  # line 2 of the body
    assert not MACHINERY.search(shown), MACHINERY.search(shown)


@pytest.mark.notebooks
def test_a_plain_cell_keeps_its_traceback_then_says_why(executed) -> None:
    cell = executed.cells[6]  # raise ValueError("on purpose")
    kinds = [output["output_type"] for output in cell.outputs]

    assert kinds == ["error", "display_data"]
    assert cell.outputs[0]["ename"] == "ValueError"
    assert INTENDED_FAILURE_CLASS in _text(cell.outputs[1])


@pytest.mark.notebooks
def test_the_copy_is_stamped_with_what_it_ran(executed) -> None:
    assert executed.metadata["recipes"]["stamp"] == source_stamp(NOTEBOOK)
    assert not any(MACHINERY.search(_text(o)) for c in executed.cells if c.cell_type == "code"
                   for o in c.outputs)


def _failed(source: str, marks: dict, tags: list[str], outputs: list) -> nbformat.NotebookNode:
    cell = new_code_cell(source, metadata={"tags": tags, "recipes": marks}, outputs=outputs)
    cell.execution_count = 1
    return new_notebook(cells=[cell])


def test_an_unexpected_failure_is_left_as_it_ran() -> None:
    error = new_output("error", ename="Error", evalue="ipytest failed with exit_code 1",
                       traceback=["Error: ipytest failed with exit_code 1"])
    unmarked = _failed("%%ipytest\n...", {}, [], [error])
    wrong_reason = _failed("%%ipytest\n...", {"expect": "KeyError", "why": "Because."},
                           ["raises-exception"], [error])

    for nb in (unmarked, wrong_reason):
        copy = readable_copy(nb, NOTEBOOK)
        assert [o["output_type"] for o in copy.cells[0].outputs] == ["error"]


def test_an_image_gets_the_cells_description() -> None:
    png = "iVBORw0KGgo="
    image = new_output("display_data", data={"image/png": png, "text/plain": "<Figure>"})
    nb = new_notebook(cells=[new_code_cell("plot()", outputs=[image],
                                           metadata={"recipes": {"alt": 'Bars: "a" < "b".'}})])

    data = readable_copy(nb, NOTEBOOK).cells[0].outputs[0]["data"]

    assert data["text/html"] == (
        f'<img src="data:image/png;base64,{png}" alt="Bars: &quot;a&quot; &lt; &quot;b&quot;.">'
    )
    assert "alt" not in nb.cells[0].outputs[0]["data"].get("text/html", "")  # input unchanged


@pytest.mark.notebooks
def test_running_a_notebook_outside_the_chapters_writes_no_page(tmp_path: Path) -> None:
    notebook = tmp_path / "not_a_chapter.ipynb"
    shutil.copy(NOTEBOOK, notebook)
    done = subprocess.run(
        [sys.executable, "-m", "recipes", "run", str(notebook), "--db-url", "sqlite+aiosqlite://"],
        capture_output=True, text=True, timeout=300, check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert not (DOCS_CHAPTERS / notebook.name).exists()
    assert not list(tmp_path.glob("*/not_a_chapter.ipynb"))
