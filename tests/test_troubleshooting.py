"""The troubleshooting page lists messages that really occur, and links to sections that exist.

``docs/troubleshooting.md`` groups its entries under ``##`` topics. Each entry is a ``###``
heading, and the first fenced code block under it is the message, as it is printed.

- Each message must appear word for word, after ANSI escapes are stripped and runs of
  whitespace made one space, in the outputs of the executed chapters (the ``executed_chapters``
  fixture: stream text, errors with their tracebacks, plain-text results), or in the output of
  pytest runs that trigger the plugin's own errors for real (``PLUGIN_ERRORS``): fresh projects
  that load only the plugin, run in a subprocess with a bad option, a bad ini or a fixture on the
  wrong loop.
- Each link to a chapter must name a chapter (``notebooks/NN_*.ipynb``, rendered from its
  executed copy in ``docs/chapters/``) and one of its headings. The heading ids are computed from
  the notebooks' Markdown the way mkdocs-jupyter makes them (nbconvert's Markdown renderer, then
  mkdocs-jupyter's ``slugify``), which gives the ids of a built site exactly; no site is built.
"""

from __future__ import annotations

import html
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import markdown
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "troubleshooting.md"
NOTEBOOKS = ROOT / "notebooks"
MIN_MESSAGES = 25
TOPICS = [
    "Event loops",
    "Greenlet and lazy loading",
    "Transactions and sessions",
    "Drivers and URLs",
    "ipytest and notebooks",
    "Plugin configuration",
]

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_FENCE = re.compile(r"^(`{3,}|~{3,})")
_CHAPTER_LINK = re.compile(r"\]\((chapters/[^)#\s]+)(#[^)\s]*)?\)")
_PAGE_ANCHOR = re.compile(r"\]\((#[^)\s]+)\)")


def normalize(text: str) -> str:
    """ANSI escapes stripped, every run of whitespace one space: the only liberties taken."""
    return " ".join(_ANSI.sub("", text).split())


@dataclass
class Entry:
    topic: str
    title: str
    message: str | None = None
    body: list[str] = field(default_factory=list)

    @property
    def chapter_links(self) -> list[tuple[str, str]]:
        links = _CHAPTER_LINK.finditer(" ".join(self.body))
        return [(m[1], (m[2] or "").lstrip("#")) for m in links]


def entries(text: str) -> list[Entry]:
    """The page's entries: a ``###`` heading, its message (the first fenced block), its text."""
    found: list[Entry] = []
    topic, fence, block = "", None, []
    for line in text.splitlines():
        opening = _FENCE.match(line)
        if fence is not None:  # inside a fenced block
            closing = line.strip()
            if closing and set(closing) == {fence[0]} and len(closing) >= len(fence):
                if found and found[-1].message is None:
                    found[-1].message = normalize("\n".join(block))
                fence = None
            else:
                block.append(line)
            continue
        if opening:
            fence, block = opening[1], []
        elif line.startswith("## "):
            topic = line[3:].strip()
        elif line.startswith("### "):
            found.append(Entry(topic, line[4:].strip()))
        elif found:
            found[-1].body.append(line)
    return found


def chapter_heading_ids(notebook: Path) -> list[str]:
    """The ids mkdocs-jupyter gives the headings of a chapter page."""
    from mkdocs_jupyter.utils import slugify
    from nbconvert.filters.markdown_mistune import markdown2html_mistune
    from nbconvert.filters.strings import _convert_header_id

    heading = re.compile(r"<h[1-6]\b[^>]*>(.*?)</h[1-6]>", re.DOTALL)
    anchor_link = re.compile(r'<a class="anchor-link".*?</a>', re.DOTALL)
    tag = re.compile(r"<[^>]+>")
    ids = []
    for cell in nbformat.read(notebook, as_version=4).cells:
        if cell.cell_type == "markdown":
            for match in heading.finditer(markdown2html_mistune(cell.source)):
                text = html.unescape(tag.sub("", anchor_link.sub("", match[1])))
                ids.append(_convert_header_id(slugify(text)))
    return ids


def chapter_outputs(notebook: Path) -> str:
    """Everything a chapter's code cells printed, normalized."""
    parts: list[str] = []
    for cell in nbformat.read(notebook, as_version=4).cells:
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                parts.append(output.text)
            elif output.output_type == "error":
                parts += [f"{output.ename}: {output.evalue}", *output.traceback]
            else:
                parts.append(str(output.get("data", {}).get("text/plain", "")))
    return normalize("\n".join(parts))


# -- the plugin's own errors, triggered for real -------------------------------------------------

DATABASE_TEST = """
    import pytest

    @pytest.mark.asyncio
    async def test_uses_the_database(db_session):
        pass
"""

FIXTURE_ON_ANOTHER_LOOP = """
    import pytest
    import pytest_asyncio
    from recipes.demo.service import register_user

    @pytest_asyncio.fixture  # asyncio_default_fixture_loop_scope = function
    async def ada(db_session):
        return await register_user(db_session, "ada@example.com")

    @pytest.mark.asyncio(loop_scope="session")
    async def test_on_the_session_loop(ada, db_session):
        pass
"""

FACTORY_WITHOUT_SESSION = """
    import pytest
    from recipes.demo.models import User
    from recipes.factories import AsyncSQLAlchemyFactory

    class UserFactory(AsyncSQLAlchemyFactory):
        class Meta:
            model = User

        email = "ada@example.com"
        name = "Ada"

    @pytest.mark.asyncio
    async def test_without_db_factories(db_session):
        await UserFactory.create()
"""

STRICT = "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"

# name: (ini to write instead of run_pytest's, or None to keep it; test module; pytest arguments)
PLUGIN_ERRORS: dict[str, tuple[str | None, str, list[str]]] = {
    "sync_driver": (
        None, DATABASE_TEST, ["--db-url", "postgresql+psycopg2://postgres@localhost/postgres"]
    ),
    "postgres_scheme": (
        None, DATABASE_TEST, ["--db-url", "postgres://app:secret@db.example.com/app"]
    ),
    "unreachable": (
        None, DATABASE_TEST, ["--db-url", "postgresql+asyncpg://postgres@127.0.0.1:1/postgres"]
    ),
    "no_metadata": (STRICT, DATABASE_TEST, []),
    "metadata_not_importable": (
        STRICT + "recipes_metadata = myapp.models:Base\n", DATABASE_TEST, []
    ),
    "no_alembic_ini": (STRICT + "recipes_schema = alembic\n", DATABASE_TEST, []),
    "fixture_on_another_loop": (None, FIXTURE_ON_ANOTHER_LOOP, []),
    "factory_without_session": (None, FACTORY_WITHOUT_SESSION, []),
}


def plugin_error_output(run_pytest, pytester: pytest.Pytester) -> str:
    """The output of one pytest run per entry of PLUGIN_ERRORS, normalized; each must fail."""
    outputs = []
    default_ini = (pytester.path / "tox.ini").read_text()
    for name, (ini, module, args) in PLUGIN_ERRORS.items():
        pytester.makeini(ini if ini is not None else default_ini)
        pytester.makepyfile(**{f"test_{name}": textwrap.dedent(module)})
        result = run_pytest(*args, f"test_{name}.py")
        output = result.stdout.str() + "\n" + result.stderr.str()
        assert result.ret != 0, f"{name}: the run did not fail\n{output}"
        outputs.append(output)
    return normalize("\n".join(outputs))


# -- the tests -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def page() -> list[Entry]:
    return entries(PAGE.read_text())


def test_the_page_lists_the_messages_by_topic(page):
    assert len(page) >= MIN_MESSAGES, f"{len(page)} entries, fewer than {MIN_MESSAGES}"
    assert list(dict.fromkeys(e.topic for e in page)) == TOPICS
    no_message = [e.title for e in page if not e.message]
    assert not no_message, f"entries without a message block: {no_message}"
    messages = [e.message for e in page]
    assert len(set(messages)) == len(messages), "a message is listed twice"
    for entry in page:
        body = " ".join(entry.body)
        assert "**Cause:**" in body and "**Fix:**" in body, f"{entry.title}: a cause and a fix"
        assert entry.chapter_links, f"{entry.title}: no link to a chapter"


def test_every_chapter_link_names_a_chapter_heading():
    ids: dict[str, list[str]] = {}
    broken = []
    for match in _CHAPTER_LINK.finditer(PAGE.read_text()):
        target, anchor = match[1], (match[2] or "").lstrip("#")
        notebook = NOTEBOOKS / Path(target).name
        if not (re.fullmatch(r"chapters/\d\d_\w+\.ipynb", target) and notebook.is_file()):
            broken.append(f"{target} is not a chapter")
            continue
        if notebook.name not in ids:
            ids[notebook.name] = chapter_heading_ids(notebook)
        if anchor not in ids[notebook.name]:
            broken.append(f"{target} has no heading #{anchor}")
    assert not broken, "\n".join(broken)


def test_every_link_within_the_page_names_a_heading():
    text = PAGE.read_text()
    md = markdown.Markdown(extensions=["fenced_code", "toc"])
    md.convert(text)

    def walk(tokens):
        for token in tokens:
            yield token["id"]
            yield from walk(token["children"])

    ids = set(walk(md.toc_tokens))
    missing = [m[1] for m in _PAGE_ANCHOR.finditer(text) if m[1][1:] not in ids]
    assert not missing, missing


def test_every_message_appears_word_for_word(page, executed_chapters, run_pytest, pytester):
    notebooks = sorted(executed_chapters.glob("[0-9][0-9]_*.ipynb"))
    chapters = {path.name: chapter_outputs(path) for path in notebooks}
    assert chapters, f"no executed chapters in {executed_chapters}"
    plugin = plugin_error_output(run_pytest, pytester)
    missing = [
        f"{entry.topic} / {entry.title}: {entry.message!r}"
        for entry in page
        if entry.message not in plugin
        and not any(entry.message in text for text in chapters.values())
    ]
    assert not missing, "not printed by any chapter nor by the plugin:\n" + "\n".join(missing)
