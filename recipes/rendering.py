"""Executed chapters as the site shows them: the runner's outputs, minus the machinery.

:func:`readable_copy` turns a notebook the runner has executed and checked into the copy the
documentation renders (``docs/chapters/``). It changes presentation only, never a result:

- A cell marked to fail (tag ``raises-exception``) that failed as expected ends with one
  "Fails on purpose" line, from the cell's ``recipes.why``. When the failure is ipytest's
  ("ipytest failed with exit_code 1", raised under pytest's own report), that error, a
  traceback through IPython and ipytest internals, is dropped: pytest's report above it is
  the lesson. Any other error keeps its traceback.
- Kernel temp files (``/tmp/ipykernel_4651/3915205577.py``) become the cell that defined the
  code (``In[7]``), ipytest's generated module (``t_7a61….py``) becomes the notebook's name,
  and absolute paths into the interpreter are shortened to ``…/site-packages/…``.
- An image in a cell with ``recipes.alt`` gets that description as its alternative text.
- ``recipes.stamp`` records what the copy was executed from (:func:`source_stamp`), and
  ``recipes.problems`` what the runner found wrong (none: the chapter passed), so the suite can
  tell a fresh, passing copy from one to execute again.

A cell that failed in any other way is left as it ran: the runner reports it, and the copy
is evidence.
"""

from __future__ import annotations

import copy
import hashlib
import html
import re
from pathlib import Path
from typing import Any

import nbformat
from ipykernel.compiler import get_tmp_hash_seed, murmur2_x86

__all__ = ["INTENDED_FAILURE_CLASS", "readable_copy", "source_stamp"]

INTENDED_FAILURE_CLASS = "recipes-intended-failure"
PACKAGE = Path(__file__).resolve().parent

_IPYTEST_ERROR = re.compile(r"ipytest failed with exit_code \d+")
_KERNEL_FILE = re.compile(r"(?:/[^\s:'\"]*)?/ipykernel_\d+/(\d+)\.py")
_IPYTEST_MODULE = re.compile(r"\bt_[0-9a-f]{32}\.py")
_INTERPRETER = re.compile(r"/[^\s:'\"]*?/(site-packages|lib/python3\.\d+)/")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def source_stamp(notebook: str | Path) -> str:
    """A hash of the stored notebook and the ``recipes`` package it runs against."""
    digest = hashlib.sha256(Path(notebook).read_bytes())
    for path in sorted(PACKAGE.rglob("*.py")):
        digest.update(path.relative_to(PACKAGE).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _kernel_names(nb: Any) -> dict[str, str]:
    """The kernel's temp-file name of each executed cell's code -> ``In[n]``."""
    names = {}
    for cell in nb.cells:
        if cell.cell_type != "code" or not cell.get("execution_count"):
            continue
        codes = [cell.source]
        if cell.source.startswith("%%"):  # a cell magic such as %%ipytest runs its body
            codes.append(cell.source.partition("\n")[2])
        for code in codes + [code + "\n" for code in codes]:  # IPython may end it with one
            names[str(murmur2_x86(code, get_tmp_hash_seed()))] = f"In[{cell.execution_count}]"
    return names


def _clean(text: str, names: dict[str, str], notebook: str) -> str:
    text = _KERNEL_FILE.sub(lambda m: names.get(m[1], "<cell>"), text)
    text = _IPYTEST_MODULE.sub(notebook, text)
    return _INTERPRETER.sub(lambda m: f"…/{m[1]}/", text)


def _intended_failure(why: str) -> dict[str, Any]:
    # The sentence is plain text with `code` in backticks; escape it, then render the code.
    body = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(why))
    return nbformat.from_dict({
        "output_type": "display_data",
        "metadata": {},
        "data": {
            "text/plain": f"Fails on purpose: {why}",
            "text/html": f'<div class="{INTENDED_FAILURE_CLASS}"><strong>Fails on purpose.'
            f"</strong> {body}</div>",
        },
    })


def _failed_as_marked(cell: Any) -> bool:
    """Marked to fail, and failed with the text it was marked with (what the runner checks)."""
    expect = cell.get("metadata", {}).get("recipes", {}).get("expect")
    errors = [o for o in cell.get("outputs", []) if o["output_type"] == "error"]
    if not (expect and errors and "raises-exception" in cell["metadata"].get("tags", [])):
        return False
    text = [o.get("text", "") for o in cell["outputs"]]
    text += [f"{o['ename']}: {o['evalue']}\n" + "\n".join(o["traceback"]) for o in errors]
    return str(expect) in _ANSI.sub("", "\n".join(text))


def _with_alt(output: Any, alt: str) -> None:
    png = output.get("data", {}).get("image/png")
    if png:  # text/html outranks image/png when the page is rendered
        src = "data:image/png;base64," + "".join(str(png).split())
        output["data"]["text/html"] = f'<img src="{src}" alt="{html.escape(alt)}">'


def readable_copy(nb: Any, notebook: str | Path, problems: list[str] | None = None) -> Any:
    """The site's copy of an executed notebook that the runner checked and found ``problems``
    in (none: it passed); ``nb`` is not changed."""
    nb = copy.deepcopy(nb)
    notebook = Path(notebook)
    names = _kernel_names(nb)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        marks = cell.get("metadata", {}).get("recipes", {})
        intended = _failed_as_marked(cell) and marks.get("why")
        outputs = []
        for output in cell.get("outputs", []):
            if output["output_type"] == "error":
                # ipytest's own error sits under pytest's report: a traceback through ipytest
                if not (intended and _IPYTEST_ERROR.fullmatch(str(output.get("evalue", "")))):
                    output["traceback"] = [_clean(line, names, notebook.name)
                                           for line in output["traceback"]]
                    outputs.append(output)
                if intended:  # the line saying why goes right under the failure
                    outputs.append(_intended_failure(marks["why"]))
                continue
            if output["output_type"] == "stream":
                output["text"] = _clean(output["text"], names, notebook.name)
            if marks.get("alt"):
                _with_alt(output, marks["alt"])
            outputs.append(output)
        cell["outputs"] = outputs
    nb.metadata.setdefault("recipes", {}).update(
        stamp=source_stamp(notebook), problems=list(problems or [])
    )
    return nb
