"""Run the chapter notebooks headless and check that they still teach what they say.

``python -m recipes run [NOTEBOOK ...] [--db-url URL] [--timeout SECONDS]`` executes each
notebook (default: every ``notebooks/NN_*.ipynb``) in a fresh ``python3`` kernel started in
the notebook's folder, one cell at a time, and fails a notebook when:

- a cell raises an error it was not marked to raise (the run of that notebook stops there);
- a cell marked to fail (tag ``raises-exception`` and metadata
  ``{"recipes": {"expect": "text", "why": "one sentence"}}``) does not fail, or its output does
  not contain the text; the site shows the sentence under the failure;
- a cell runs longer than the timeout, so a hang fails instead of blocking CI (a cell that
  measures, running pytest many times, may be marked ``{"recipes": {"timeouts": N}}``: it
  gets N times the timeout, which a busy CI machine needs);
- a recipe cell (metadata ``{"recipes": {"recipe": "module:qualname"}}``) differs from the
  source of that object: the notebook teaches exactly what ``recipes/`` ships.

An exercise is a cell marked to fail that also carries ``{"recipes": {"exercise": FINGERPRINT}}``,
the :func:`exercise_fingerprint` of its source as shipped. As shipped it must fail like any
marked cell. Once a learner has edited it, it is theirs: passing is reported as solved, and
failing as "not solved yet", with pytest's reason.

:func:`execute_notebook` runs and checks one notebook; the command line
(:mod:`recipes.__main__`) runs them all, prints the table and writes the executed copies to
``docs/chapters/``, where the documentation build reads them.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import inspect
import os
import re
import time
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import Any

import nbformat
import zmq
from jupyter_client.manager import KernelManager
from jupyter_core.utils import ensure_async
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from traitlets.config import Config

from .databases import ENV_URL
from .rendering import readable_copy

__all__ = [
    "NotebookResult",
    "RunnerError",
    "check_notebook",
    "check_recipe_cells",
    "default_notebooks",
    "execute_notebook",
    "exercise_fingerprint",
]

PROJECT_ROOT = Path(__file__).resolve().parent.parent  # a checkout: recipes/ beside notebooks/
DOCS_CHAPTERS = PROJECT_ROOT / "docs" / "chapters"  # where the docs build reads executed chapters
DEFAULT_TIMEOUT = 120
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
# pytest's last line, "1 failed, 2 passed in 0.31s", with or without the ==== around it
_SUMMARY = re.compile(r"^=*\s*((?:\d+ [a-z]+(?:, )?)+) in [\d.]+s\b")


class RunnerError(Exception):
    """The runner cannot start; ``str()`` is one line that says what to do."""


@dataclass
class NotebookResult:
    """What running one notebook found; ``ok`` when there are no problems."""

    path: Path
    cells: int = 0
    passed: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    output: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def verdict(self) -> str:
        return "ok" if self.ok else "FAILED"


def default_notebooks() -> list[Path]:
    """The chapters in reading order: ``notebooks/NN_*.ipynb`` of this checkout."""
    folder = PROJECT_ROOT / "notebooks"
    if not folder.is_dir():
        raise RunnerError(
            f"no notebooks/ folder beside the recipes package (looked in {folder}): "
            "run from a source checkout, or name the notebooks to run"
        )
    found = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise RunnerError(f"no chapter notebooks (NN_*.ipynb) in {folder}")
    return found


# -- static checks ---------------------------------------------------------------------------

def _marks(cell: Any) -> dict[str, Any]:
    return cell.get("metadata", {}).get("recipes", {})


def _timeout(cell: Any, timeout: int) -> int:
    """The cell's time limit in seconds: the run's, times the cell's ``timeouts`` mark."""
    return timeout * int(_marks(cell).get("timeouts", 1))


def _lines(source: str) -> list[str]:
    lines = [line.rstrip() for line in source.splitlines()]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return lines


def exercise_fingerprint(source: str) -> str:
    """What ``recipes.exercise`` holds: a short hash of the cell's source, blank edges ignored."""
    return hashlib.sha256("\n".join(_lines(source)).encode()).hexdigest()[:12]


def _edited_exercise(cell: Any) -> bool:
    shipped = _marks(cell).get("exercise")
    return bool(shipped) and shipped != exercise_fingerprint(cell.source)


def check_recipe_cells(path: str | Path) -> list[str]:
    """Problems with the notebook's recipe cells: each must equal its object's source, modulo
    trailing whitespace and blank lines around it. Cells are numbered from 1, markdown included."""
    path = Path(path)
    problems = []
    for number, cell in enumerate(nbformat.read(path, as_version=4).cells, start=1):
        spec = _marks(cell).get("recipe")
        if spec is None:
            continue
        where = f"cell {number} (recipe {spec})"
        module_name, _, qualname = str(spec).partition(":")
        if not module_name or not qualname:
            problems.append(f'{where}: write the recipe as "package.module:name"')
            continue
        try:
            target: Any = importlib.import_module(module_name)
            for part in qualname.split("."):
                target = getattr(target, part)
            expected = _lines(inspect.getsource(target))
        except Exception as exc:
            problems.append(f"{where}: cannot read the recipe ({type(exc).__name__}: {exc})")
            continue
        actual = _lines(cell.source)
        if actual != expected:
            pairs = enumerate(zip_longest(actual, expected))
            line, (_, wanted) = next((i, pair) for i, pair in pairs if pair[0] != pair[1])
            shown = "the end of the recipe" if wanted is None else repr(wanted.strip())
            problems.append(
                f"{where}: differs from the source at line {line + 1} of the recipe: "
                f"expected {shown}; copy the source into the cell"
            )
    return problems


def check_notebook(path: str | Path) -> list[str]:
    """Every problem found without running: recipe drift and inconsistent failure marks."""
    problems = check_recipe_cells(path)
    for number, cell in enumerate(nbformat.read(path, as_version=4).cells, start=1):
        tagged = "raises-exception" in cell.get("metadata", {}).get("tags", [])
        expect = _marks(cell).get("expect")
        if tagged and not (isinstance(expect, str) and expect):
            problems.append(f"cell {number}: tagged raises-exception, but no recipes.expect text")
        if tagged and not (isinstance(_marks(cell).get("why"), str) and _marks(cell)["why"]):
            problems.append(f"cell {number}: tagged raises-exception, but no recipes.why: "
                            "one sentence saying why it fails, which the site shows under it")
        elif expect is not None and not tagged:
            problems.append(f"cell {number}: has recipes.expect but not the raises-exception tag")
        if _marks(cell).get("exercise") and not tagged and not _edited_exercise(cell):
            problems.append(f"cell {number}: an exercise must be marked to fail until it is solved")
    return problems


# -- execution -------------------------------------------------------------------------------

def _text(cell: Any) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type == "error":
            parts.extend([f"{output.ename}: {output.evalue}", *output.traceback])
        else:
            parts.append(str(output.get("data", {}).get("text/plain", "")))
    return _ANSI.sub("", "\n".join(parts))


def _passed(cell: Any) -> int:
    if not cell.source.lstrip().startswith("%%ipytest"):
        return 0
    total = 0
    for line in _text(cell).splitlines():
        summary = _SUMMARY.match(line.strip())
        if summary:
            total += sum(int(n) for n in re.findall(r"(\d+) passed", summary.group(1)))
    return total


def _reason(error: Any, text: str) -> str:
    # An ipytest failure says only "exit_code 1"; pytest's FAILED/ERROR lines say why.
    reasons = [line for line in text.splitlines() if line.startswith(("FAILED ", "ERROR "))]
    return "; ".join(reasons[:3]) or f"{error.ename}: {error.evalue}".splitlines()[0]


def _check_exercise(cell: Any, number: int, result: NotebookResult) -> None:
    """An exercise the learner edited: solved when it passes, else not solved yet."""
    error = next((o for o in cell.outputs if o.output_type == "error"), None)
    if error is None:
        result.notes.append(f"cell {number}: the exercise passes now: solved")
    else:
        result.problems.append(f"cell {number}: exercise not solved yet: {_reason(error, _text(cell))}")


def _check_cell(cell: Any, number: int) -> tuple[str | None, bool]:
    """(problem, fatal): a fatal problem is an unexpected error, after which the run stops."""
    error = next((o for o in cell.outputs if o.output_type == "error"), None)
    expect = _marks(cell).get("expect")
    text = _text(cell)
    if expect is None:
        if error is None:
            return None, False
        return f"cell {number}: unexpected error: {_reason(error, text)}", True
    if error is None:
        return f"cell {number}: marked to fail with {expect!r}, but it ran without error", False
    if str(expect) not in text:
        reason = f"{error.ename}: {error.evalue}".splitlines()[0]
        return f"cell {number}: failed, but not with {expect!r} ({reason})", False
    return None, False


async def _execute(client: NotebookClient, result: NotebookResult, env: dict[str, str]) -> None:
    async with client.async_setup_kernel(env=env):
        assert client.kc is not None
        info = await client.async_wait_for_reply(await ensure_async(client.kc.kernel_info()))
        if info and "language_info" in info["content"]:
            client.nb.metadata["language_info"] = info["content"]["language_info"]
        for index, cell in enumerate(client.nb.cells):
            if cell.cell_type != "code" or not cell.source.strip():
                continue
            result.cells += 1
            try:
                await client.async_execute_cell(cell, index, client.code_cells_executed + 1)
            except CellTimeoutError:
                result.problems.append(f"cell {index + 1}: still running after {_timeout(cell, client.timeout)} s")
                client.shutdown_kernel = "immediate"  # a hung kernel does not answer a polite one
                return
            except DeadKernelError:
                result.problems.append(f"cell {index + 1}: the kernel died")
                return
            result.passed += _passed(cell)
            if _edited_exercise(cell):
                _check_exercise(cell, index + 1, result)
                continue
            problem, fatal = _check_cell(cell, index + 1)
            if problem:
                result.problems.append(problem)
            if fatal:
                return


def execute_notebook(
    path: str | Path,
    *,
    db_url: str | None = None,
    timeout: int = DEFAULT_TIMEOUT,
    output_dir: str | Path | None = None,
) -> NotebookResult:
    """Run one notebook and check it; write the executed copy into ``output_dir`` if given,
    as the site shows it (:func:`recipes.rendering.readable_copy`).

    ``db_url`` becomes ``RECIPES_DB_URL`` in the kernel; otherwise the kernel inherits ours.
    """
    path = Path(path).resolve()
    result = NotebookResult(path, problems=check_notebook(path))
    env = {**os.environ, **({ENV_URL: db_url} if db_url else {})}
    config = Config()
    if zmq.has("curve") and "transport_encryption" in KernelManager.class_trait_names():
        # Encrypted kernel sockets where pyzmq and jupyter_client can: otherwise ipykernel
        # warns about plain-text TCP on every start, in the middle of the progress lines.
        config.KernelManager.transport_encryption = "auto"
    # A kernel's exit stops the servers its cells started (embedded PostgreSQL): on a busy
    # machine that takes longer than the 5 s after which Jupyter kills a kernel.
    config.KernelManager.shutdown_wait_time = 30
    client = NotebookClient(
        nbformat.read(path, as_version=4),
        timeout=timeout,
        timeout_func=lambda cell: _timeout(cell, timeout),
        kernel_name="python3",
        allow_errors=True,  # we judge every error ourselves, against the cell's marks
        coalesce_streams=True,  # one block of text per cell, as Jupyter shows it
        resources={"metadata": {"path": str(path.parent)}},  # the kernel's working directory
        config=config,
    )
    start = time.monotonic()
    try:
        asyncio.run(_execute(client, result, env))
    except Exception as exc:  # the kernel did not start, or the notebook is not valid
        detail = (str(exc).strip() or "no detail").splitlines()[0]
        result.problems.append(f"could not run: {type(exc).__name__}: {detail}")
    result.seconds = time.monotonic() - start
    if output_dir is not None:
        result.output = Path(output_dir) / path.name
        result.output.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(readable_copy(client.nb, path, result.problems), result.output)
    return result
