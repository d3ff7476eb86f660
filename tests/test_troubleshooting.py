"""The troubleshooting page lists messages that really occur, and links to sections that exist.

``docs/troubleshooting.md`` groups its entries under ``##`` topics. Each entry is a ``###``
heading, and the first fenced code block under it is the message, as it is printed.

- Each message must appear word for word, after ANSI escapes are stripped and runs of
  whitespace made one space, in the outputs of the executed chapters (the ``executed_chapters``
  fixture: stream text, errors with their tracebacks, plain-text results), or in the output of
  pytest runs that trigger the plugin's own errors for real (``PLUGIN_ERRORS``): fresh projects
  that load only the plugin, run in a subprocess with a bad option, a bad ini, modules of their
  own (two bases, a schema, an application's sessionmaker) or a fixture on the wrong loop.
- Each entry links to the chapter section that produces its message. An entry under "Plugin
  configuration" may link instead to the page that explains the setting, ``adopt.md`` or
  ``recipes/plugin.md``: no chapter uses most of them.
- Each link to a chapter must name a chapter (``notebooks/NN_*.ipynb``, rendered from its
  executed copy in ``docs/chapters/``) and one of its headings. The heading ids are computed from
  the notebooks' Markdown the way mkdocs-jupyter makes them (nbconvert's Markdown renderer, then
  mkdocs-jupyter's ``slugify``), which gives the ids of a built site exactly; no site is built.
- Each link to ``adopt.md`` or ``recipes/plugin.md``, and each ``#anchor`` within the page, must
  name one of that page's headings: ids computed as mkdocs computes them, by Python-Markdown's
  ``toc`` extension with the extensions and settings ``mkdocs.yml`` lists.
"""

from __future__ import annotations

import html
import re
import textwrap
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import markdown
import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGE = DOCS / "troubleshooting.md"
NOTEBOOKS = ROOT / "notebooks"
MIN_MESSAGES = 31
TOPICS = [
    "Event loops",
    "Greenlet and lazy loading",
    "Transactions and sessions",
    "Drivers and URLs",
    "ipytest and notebooks",
    "Plugin configuration",
]
# The topic whose entries may link to the pages that explain the plugin's settings, no chapter
PLUGIN_TOPIC = "Plugin configuration"

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_FENCE = re.compile(r"^(`{3,}|~{3,})")
_CHAPTER_LINK = re.compile(r"\]\((chapters/[^)#\s]+)(#[^)\s]*)?\)")
_PAGE_ANCHOR = re.compile(r"\]\((#[^)\s]+)\)")
_SETTINGS_LINK = re.compile(r"\]\(((?:adopt|recipes/plugin)\.md)(#[^)\s]*)?\)")


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

    @property
    def settings_links(self) -> list[tuple[str, str]]:
        """Links to the pages that explain the plugin's settings (adopt.md, recipes/plugin.md)."""
        links = _SETTINGS_LINK.finditer(" ".join(self.body))
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


@cache
def page_heading_ids(page: Path) -> frozenset[str]:
    """The ids mkdocs gives the headings of a Markdown page: Python-Markdown's ``toc`` with
    the ``markdown_extensions`` of ``mkdocs.yml``, their settings included."""
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    extensions, settings = [], {}
    for item in config["markdown_extensions"]:
        name, options = next(iter(item.items())) if isinstance(item, dict) else (item, None)
        extensions.append(name)
        settings[name] = dict(options or {})
    if "pymdownx.snippets" in settings:  # its base_path is relative to the repository root
        settings["pymdownx.snippets"]["base_path"] = [str(ROOT)]
    md = markdown.Markdown(extensions=extensions, extension_configs=settings)
    md.convert(page.read_text())

    def walk(tokens):
        for token in tokens:
            yield token["id"]
            yield from walk(token["children"])

    return frozenset(walk(md.toc_tokens))


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


def one_table(table: str, column: str) -> str:
    """A module with a declarative base of its own and one model: ``id`` and ``column``."""
    return f"""
        from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

        class Base(DeclarativeBase):
            pass

        class Row(Base):
            __tablename__ = {table!r}
            id: Mapped[int] = mapped_column(primary_key=True)
            {column}: Mapped[str] = mapped_column(default="")
    """


MODELS_IN_A_SCHEMA = """
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

    class Base(DeclarativeBase):
        pass

    class Invoice(Base):
        __tablename__ = "invoices"
        __table_args__ = {"schema": "billing"}
        id: Mapped[int] = mapped_column(primary_key=True)
"""

# An application's module-level sessionmaker, on an engine of its own that no test may reach
APP_DB = """
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    SessionLocal = async_sessionmaker(create_async_engine("sqlite+aiosqlite://"))
"""

SESSION_WITHOUT_DATABASE = """
    import app_db

    def test_a_job_without_the_database():
        app_db.SessionLocal()
"""

STRICT = "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"
DEMO_TABLES = STRICT + "recipes_metadata = recipes.demo.models:Base\n"  # run_pytest's ini


@dataclass(frozen=True)
class Trigger:
    """One pytest run that must fail with a message of the page."""

    ini: str | None  # the ini to write instead of run_pytest's, or None to keep it
    test: str  # the test module
    args: list[str] = field(default_factory=list)  # pytest's arguments
    files: dict[str, str] = field(default_factory=dict)  # more modules, by module name


PLUGIN_ERRORS: dict[str, Trigger] = {
    "sync_driver": Trigger(
        None, DATABASE_TEST, ["--db-url", "postgresql+psycopg2://postgres@localhost/postgres"]
    ),
    "postgres_scheme": Trigger(
        None, DATABASE_TEST, ["--db-url", "postgres://app:secret@db.example.com/app"]
    ),
    "unreachable": Trigger(
        None, DATABASE_TEST, ["--db-url", "postgresql+asyncpg://postgres@127.0.0.1:1/postgres"]
    ),
    "no_metadata": Trigger(STRICT, DATABASE_TEST),
    "metadata_not_importable": Trigger(
        STRICT + "recipes_metadata = myapp.models:Base\n", DATABASE_TEST
    ),
    "no_alembic_ini": Trigger(STRICT + "recipes_schema = alembic\n", DATABASE_TEST),
    "fixture_on_another_loop": Trigger(None, FIXTURE_ON_ANOTHER_LOOP),
    "factory_without_session": Trigger(None, FACTORY_WITHOUT_SESSION),
    "table_defined_twice": Trigger(
        STRICT + "recipes_metadata = app_models:Base, plugin_models:Base\n",
        DATABASE_TEST,
        files={"app_models": one_table("users", "email"),
               "plugin_models": one_table("users", "name")},
    ),
    "schema_on_sqlite": Trigger(  # the default database, SQLite
        STRICT + "recipes_metadata = models:Base\n", DATABASE_TEST,
        files={"models": MODELS_IN_A_SCHEMA},
    ),
    "unset_variable": Trigger(  # DATABASE_URL is unset for these runs
        DEMO_TABLES + "recipes_db_url = ${DATABASE_URL}\n", DATABASE_TEST
    ),
    "sessionmaker_not_importable": Trigger(
        DEMO_TABLES + "recipes_sessionmakers = app_db:Nope\n", DATABASE_TEST,
        files={"app_db": APP_DB},
    ),
    "session_without_database": Trigger(
        DEMO_TABLES + "recipes_sessionmakers = app_db:SessionLocal\n", SESSION_WITHOUT_DATABASE,
        files={"app_db": APP_DB},
    ),
}


def plugin_error_output(run_pytest, pytester: pytest.Pytester) -> str:
    """The output of one pytest run per entry of PLUGIN_ERRORS, normalized; each must fail."""
    outputs = []
    default_ini = (pytester.path / "tox.ini").read_text()
    for name, trigger in PLUGIN_ERRORS.items():
        pytester.makeini(trigger.ini if trigger.ini is not None else default_ini)
        for module, source in trigger.files.items():
            pytester.makepyfile(**{module: textwrap.dedent(source)})
        pytester.makepyfile(**{f"test_{name}": textwrap.dedent(trigger.test)})
        result = run_pytest(*trigger.args, f"test_{name}.py")
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
        if entry.topic == PLUGIN_TOPIC:
            assert entry.chapter_links or any(anchor for _, anchor in entry.settings_links), (
                f"{entry.title}: no link to a chapter, nor to a heading of adopt.md or "
                "recipes/plugin.md"
            )
        else:
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


def test_every_link_to_the_settings_pages_names_a_heading():
    """A link with no anchor names the page; one with an anchor, a heading of that page."""
    links = [(m[1], (m[2] or "").lstrip("#")) for m in _SETTINGS_LINK.finditer(PAGE.read_text())]
    assert links, "no link to adopt.md or recipes/plugin.md"
    broken = [f"{target} has no heading #{anchor}" for target, anchor in links
              if anchor and anchor not in page_heading_ids(DOCS / target)]
    assert not broken, "\n".join(broken)


def test_every_link_within_the_page_names_a_heading():
    text = PAGE.read_text()
    ids = page_heading_ids(PAGE)
    missing = [m[1] for m in _PAGE_ANCHOR.finditer(text) if m[1][1:] not in ids]
    assert not missing, missing


def test_every_message_appears_word_for_word(
    page, executed_chapters, run_pytest, pytester, monkeypatch
):
    monkeypatch.delenv("DATABASE_URL", raising=False)  # for "unset_variable"
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
