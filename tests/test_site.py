"""The documentation site, tested in a real browser.

The site is built as CI builds it (``mkdocs build --strict``, from the executed chapters the
``executed_chapters`` fixture provides) into ``build/site/``, served on 127.0.0.1 by
``http.server``, and driven in Debian's Chromium (``/usr/bin/chromium``) through playwright;
playwright's own browser download is never used. Each page of ``mkdocs.yml``'s nav is opened
once (the ``visits`` fixture records what it shows), and the tests check that

- every chapter in ``notebooks/`` has a page;
- each page loads with no console error, no script error and no failed request, and makes no
  request that leaves 127.0.0.1 (those are blocked, and reported);
- every internal link answers 200, and every ``#fragment`` names an element of its target;
- every table-of-contents entry lands on its heading, and keeps the heading's inline code;
- each chapter page shows executed pytest output, the "Fails on purpose." line under each cell
  the notebook marks to fail (``recipes.why``), and none of the kernel's machinery;
- "Launch in Binder" points at the chapter on mybinder.org (checked, never visited), and
  "Download the notebook" downloads ``notebooks/NN_name.ipynb`` as stored, byte for byte;
- a copy button puts its block's code on the clipboard (Material's, on every block of every
  page; mkdocs-jupyter's, on a sample of one chapter's cells);
- search finds a recipe page by its name and by a function it defines;
- on a phone-sized screen the ``In [n]:`` prompts are hidden.

Screenshots (the first screen of every page, each chapter's first intended failure, the search
results and a chapter on a phone) go to ``build/screenshots/``. Without Chromium the module is
skipped, unless ``CI`` or ``RECIPES_REQUIRE_BROWSER`` is set: then it fails, saying how to
install it.
"""

from __future__ import annotations

import html.parser
import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urldefrag

import pytest

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "build" / "site"
SCREENSHOTS = ROOT / "build" / "screenshots"
NOTEBOOKS = ROOT / "notebooks"
DESKTOP = {"width": 1280, "height": 900}  # wide enough for the table-of-contents sidebar
PHONE = {"width": 390, "height": 844}
INSTALL = "apt-get install -y chromium"
# What the kernel and ipytest leave in an output that a reader should never see
MACHINERY = re.compile(r"ipykernel_|\bt_[0-9a-f]{32}\.py|The ipytest magic cannot evaluate")
PYTEST_SUMMARY = re.compile(r"\b\d+ passed\b.* in \d")
BINDER = "https://mybinder.org/v2/gh/{slug}/HEAD?urlpath=lab/tree/notebooks/{name}"
# Material's copy buttons (.md-clipboard before 9.7), and mkdocs-jupyter's on a notebook cell
COPY_BUTTONS = ".md-clipboard, [data-md-type=copy], clipboard-copy"

pytestmark = [pytest.mark.notebooks, pytest.mark.surfaces]  # it needs the executed chapters


def _chromium() -> str:
    """The system's Chromium; skip without it, or fail if CI or RECIPES_REQUIRE_BROWSER is set."""
    found = next((path for path in ["/usr/bin/chromium", shutil.which("chromium")]
                  if path and os.access(path, os.X_OK)), None)
    why = f"the site's browser test needs Debian's Chromium: {INSTALL}"
    try:
        import playwright.sync_api  # noqa: F401  (the [dev] extra installs it)
    except ImportError:
        found, why = None, 'the site\'s browser test needs playwright: pip install -e ".[dev]"'
    if found:
        return found
    if os.environ.get("CI") or os.environ.get("RECIPES_REQUIRE_BROWSER"):
        pytest.fail(why, pytrace=False)
    pytest.skip(why)


def _config() -> dict[str, Any]:
    from mkdocs.utils.yaml import yaml_load  # mkdocs' own loader: it knows mkdocs.yml's tags

    with open(ROOT / "mkdocs.yml", "rb") as file:
        return yaml_load(file)


def _nav_sources(nav: Any) -> list[str]:
    """Every page's source file in the nav, in order (links to other sites left out)."""
    if isinstance(nav, str):
        return [] if "://" in nav else [nav]
    if isinstance(nav, dict):
        return [source for value in nav.values() for source in _nav_sources(value)]
    return [source for item in nav for source in _nav_sources(item)]


def _url_path(source: str) -> str:
    """A page's path in the site (directory URLs, mkdocs' default): ``a/b.md`` -> ``a/b/``."""
    stem = source.rsplit(".", 1)[0]
    return stem[: -len("index")] if posixpath.basename(stem) == "index" else stem + "/"


_UNSAFE = re.compile(r"[^\w.-]+")


def _shot(name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS / f"{_UNSAFE.sub('_', name.strip('/')) or 'index'}.png"


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *_: Any) -> None:
        pass


class _Ids(html.parser.HTMLParser):
    """The ids (and ``<a name>``s) of an HTML page: what a ``#fragment`` can land on."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, value in attrs:
            if value and (key == "id" or (tag == "a" and key == "name")):
                self.ids.add(value)


@dataclass
class Evidence:
    """What went wrong while a browser page was open."""

    base: str
    problems: list[str] = field(default_factory=list)
    external: list[str] = field(default_factory=list)  # blocked: they leave 127.0.0.1

    def ours(self, url: str) -> bool:
        return url.startswith(self.base)


@dataclass
class Site:
    """The built site, served on 127.0.0.1, and the browser that opens it."""

    base: str  # http://127.0.0.1:PORT/
    pages: list[str]  # the URL path of each page in the nav, in order ("" is the home page)
    chapters: dict[str, str]  # notebook (NN_name.ipynb) -> its page's URL path
    repo_slug: str
    browser: Any

    @contextmanager
    def page(self, viewport: dict[str, int] = DESKTOP,
             clipboard: bool = False) -> Iterator[tuple[Any, Evidence]]:
        """A browser page in a fresh context that records errors and blocks other hosts."""
        context = self.browser.new_context(viewport=viewport, accept_downloads=True)
        if clipboard:
            context.grant_permissions(["clipboard-read", "clipboard-write"],
                                      origin=self.base.rstrip("/"))
        evidence = Evidence(self.base)

        def route(route: Any) -> None:
            url = route.request.url
            if evidence.ours(url) or not url.startswith(("http:", "https:", "ws:", "wss:")):
                route.continue_()
            else:
                evidence.external.append(url)
                route.abort("blockedbyclient")

        def console(message: Any) -> None:
            source = message.location.get("url", "")
            blocked = source in evidence.external and "Failed to load resource" in message.text
            if message.type == "error" and not blocked:
                evidence.problems.append(f"console error: {message.text} ({source})")

        def response(response: Any) -> None:
            if evidence.ours(response.url) and response.status >= 400:
                evidence.problems.append(f"HTTP {response.status}: {response.url}")

        def failed(request: Any) -> None:
            # ERR_ABORTED: a download, or a fetch the next navigation cancelled; not the site's
            if evidence.ours(request.url) and "ERR_ABORTED" not in str(request.failure):
                evidence.problems.append(f"request failed: {request.url} ({request.failure})")

        context.route("**/*", route)
        page = context.new_page()
        page.on("console", console)
        page.on("pageerror", lambda error: evidence.problems.append(f"script error: {error}"))
        page.on("response", response)
        page.on("requestfailed", failed)
        try:
            yield page, evidence
        finally:
            context.close()

    def open(self, page: Any, path: str, wait_until: str = "networkidle") -> None:
        response = page.goto(self.base + path, wait_until=wait_until)
        assert response is not None and response.status == 200, (
            f"/{path}: HTTP {response and response.status}")


@pytest.fixture(scope="session")
def chromium() -> str:
    """The browser, looked for before the chapters are executed (minutes) for nothing."""
    return _chromium()


@pytest.fixture(scope="module")
def site(chromium: str, executed_chapters: Path) -> Iterator[Site]:
    """Build the site from the executed chapters, serve it on 127.0.0.1, start Chromium."""
    from playwright.sync_api import sync_playwright

    config = _config()
    sources = _nav_sources(config["nav"])
    started = time.monotonic()
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(SITE)],
        check=False, cwd=ROOT, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    assert build.returncode == 0, f"mkdocs build --strict failed:\n{build.stdout[-6000:]}"
    print(f"\nsite built in {time.monotonic() - started:.0f} s: {SITE}")
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)  # this run's screenshots only

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(SITE)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=chromium)
        try:
            yield Site(
                base=f"http://127.0.0.1:{server.server_port}/",
                pages=[_url_path(source) for source in sources],
                chapters={posixpath.basename(source): _url_path(source) for source in sources
                          if source.startswith("chapters/") and source.endswith(".ipynb")},
                repo_slug=config["extra"]["repo_slug"],
                browser=browser,
            )
        finally:
            browser.close()
    finally:
        playwright.stop()
        server.shutdown()
        server.server_close()
        thread.join()


# Each entry of the table of contents (the right-hand sidebar) against the heading it names;
# then a click on it (the browser's own anchor navigation), and whether the heading is in view.
_TOC = """() => {
  const norm = s => s.replace(/\\s+/g, ' ').trim();
  const codes = el => Array.from(el.querySelectorAll('code'), c => norm(c.textContent));
  const entries = [];
  for (const a of document.querySelectorAll(
      '.md-sidebar--secondary .md-nav--secondary a.md-nav__link')) {
    const href = a.getAttribute('href');
    const entry = {href, label: norm(a.textContent), codes: codes(a)};
    const id = href.startsWith('#') && decodeURIComponent(href.slice(1));
    const target = id && document.getElementById(id);
    if (target) {
      const heading = target.cloneNode(true);
      heading.querySelectorAll('a.headerlink, a.anchor-link').forEach(link => link.remove());
      a.click();
      const top = target.getBoundingClientRect().top;
      Object.assign(entry, {
        tag: target.tagName, text: norm(heading.textContent), headingCodes: codes(heading),
        landed: location.hash === href && top >= 0 && top < innerHeight,
      });
    }
    entries.push(entry);
  }
  scrollTo(0, 0);
  return entries;
}"""


@dataclass
class Visit:
    """What one page showed, opened once on a desktop-sized screen."""

    problems: list[str]
    external: list[str]
    links: list[str]  # every a[href], resolved
    toc: list[dict[str, Any]]
    copy_buttons: int
    screenshot: Path
    # chapter pages only
    outputs: list[str] = field(default_factory=list)  # text of each .jp-OutputArea-output
    failures: list[str] = field(default_factory=list)  # text of each .recipes-intended-failure
    binder: list[str] = field(default_factory=list)  # hrefs of "Launch in Binder"
    download: list[tuple[str, bool]] = field(default_factory=list)  # (href, has download attr)
    downloaded: tuple[str, bytes] | None = None  # (file name, content) of a click on it


def _words(text: str) -> str:
    return " ".join(text.split())


def _chapter(page: Any, visit: Visit, path: str) -> None:
    """Record what a chapter page shows; download its notebook."""
    visit.outputs = page.locator(".jp-OutputArea-output").all_inner_texts()
    failures = page.locator(".recipes-intended-failure")
    visit.failures = [_words(text) for text in failures.all_inner_texts()]
    if visit.failures:
        cell = failures.first.locator("xpath=ancestor::div[contains(@class, 'jp-Cell ')][1]")
        shot = _shot(f"{path.strip('/')}_failure")
        (cell if cell.count() else failures.first).screenshot(path=shot)
    binder = page.get_by_role("link", name="Launch in Binder")
    visit.binder = [binder.nth(i).get_attribute("href") or "" for i in range(binder.count())]
    download = page.get_by_role("link", name="Download the notebook")
    visit.download = [(download.nth(i).get_attribute("href") or "",
                       download.nth(i).get_attribute("download") is not None)
                      for i in range(download.count())]
    if download.count():
        with page.expect_download() as event:
            download.first.click()
        visit.downloaded = (event.value.suggested_filename, Path(event.value.path()).read_bytes())


@pytest.fixture(scope="module")
def visits(site: Site) -> dict[str, Visit]:
    """Open every page of the nav once and record what it shows (see :class:`Visit`)."""
    chapters = set(site.chapters.values())
    found = {}
    with site.page() as (page, evidence):
        for path in site.pages:
            evidence.problems, evidence.external = [], []
            site.open(page, path)
            visit = Visit(
                problems=evidence.problems, external=evidence.external,
                links=page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)"),
                toc=page.evaluate(_TOC),
                copy_buttons=page.locator(COPY_BUTTONS).count(),
                screenshot=_shot(path),
            )
            page.screenshot(path=visit.screenshot)
            if path in chapters:
                _chapter(page, visit, path)
            found[path] = visit
    print("screenshots:", *sorted(SCREENSHOTS.glob("*.png")), sep="\n  ")
    return found


def test_every_chapter_has_a_page(site: Site) -> None:
    notebooks = sorted(path.name for path in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    assert notebooks, "no chapters in notebooks/"
    assert sorted(site.chapters) == notebooks, "mkdocs.yml's nav and notebooks/ disagree"


def test_the_site_has_the_nav_pages_and_no_others(site: Site) -> None:
    # A notebook that is not a chapter (say, the runner's own test notebooks, written into
    # docs/chapters/) would become a page of its own, outside the nav, without a warning.
    built = {str(path.parent.relative_to(SITE)).replace(".", "") + "/"
             for path in SITE.rglob("index.html")}
    expected = {_url_path(source).lstrip("/") or "/" for source in _nav_sources(_config()["nav"])}
    assert {path.lstrip("/") or "/" for path in built} == expected


def test_every_page_loads_without_errors(visits: dict[str, Visit]) -> None:
    problems = [f"/{path}: {problem}" for path, visit in visits.items()
                for problem in visit.problems]
    assert not problems, "\n".join(problems)


def test_no_request_leaves_the_site(visits: dict[str, Visit]) -> None:
    attempted: dict[str, list[str]] = {}
    for path, visit in visits.items():
        for url in dict.fromkeys(visit.external):
            attempted.setdefault(url, []).append(f"/{path}")
    assert not attempted, "requests to other hosts (blocked):\n" + "\n".join(
        f"{url} (from {', '.join(pages[:3])}{', ...' if len(pages) > 3 else ''})"
        for url, pages in attempted.items())


def _fetch(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read(), response.headers.get_content_type()
    except urllib.error.HTTPError as error:
        return error.code, b"", ""


def test_internal_links_resolve(site: Site, visits: dict[str, Visit]) -> None:
    where: dict[str, set[str]] = {}  # each internal link (with its fragment) -> pages with it
    for path, visit in visits.items():
        for link in visit.links:
            if link.startswith(site.base):
                where.setdefault(link, set()).add(f"/{path}")
    fetched = {target: _fetch(target) for target in sorted({urldefrag(link)[0] for link in where})}
    ids = {}
    for target, (status, body, kind) in fetched.items():
        if status == 200 and kind == "text/html":
            parser = _Ids()
            parser.feed(body.decode())
            ids[target] = parser.ids
    broken = []
    for link, pages in sorted(where.items()):
        target, fragment = urldefrag(link)
        status, shown, on = fetched[target][0], link[len(site.base) - 1:], ", ".join(sorted(pages))
        if status != 200:
            broken.append(f"{shown}: HTTP {status} (on {on})")
        elif fragment and target in ids and unquote(fragment) not in ids[target]:
            broken.append(f"{shown}: no element with that id there (on {on})")
    print(f"{len(where)} internal links to {len(fetched)} targets checked")
    assert not broken, f"broken internal links, of {len(where)}:\n" + "\n".join(broken)


def test_table_of_contents_lands_on_headings(visits: dict[str, Visit]) -> None:
    problems = []
    for path, visit in visits.items():
        for entry in visit.toc:
            at = f"/{path}{entry['href']} ({entry['label']!r})"
            if not entry.get("tag"):
                problems.append(f"{at}: no element with that id on the page")
            elif not re.fullmatch(r"H[1-6]", entry["tag"]):
                problems.append(f"{at}: names a <{entry['tag'].lower()}>, not a heading")
            elif entry["codes"] != entry["headingCodes"]:
                problems.append(f"{at}: the heading's code {entry['headingCodes']} is "
                                f"{entry['codes'] or 'plain text'} in the table of contents")
            elif entry["label"] != entry["text"]:
                problems.append(f"{at}: the heading reads {entry['text']!r}")
            elif not entry["landed"]:
                problems.append(f"{at}: clicked, the heading is not in view")
    assert any(visit.toc for visit in visits.values()), "no page has a table of contents"
    assert not problems, "\n".join(problems)


def _intended_failures(notebook: Path) -> list[str]:
    """The "Fails on purpose." lines the stored notebook asks for, as a reader reads them."""
    lines = []
    for cell in json.loads(notebook.read_text())["cells"]:
        metadata = cell.get("metadata", {})
        why = metadata.get("recipes", {}).get("why")
        if cell["cell_type"] == "code" and why and "raises-exception" in metadata.get("tags", []):
            lines.append(_words(f"Fails on purpose. {why.replace('`', '')}"))
    return lines


def test_chapters_show_executed_output(site: Site, visits: dict[str, Visit]) -> None:
    problems = []
    for path in site.chapters.values():
        visit = visits[path]
        if not any(PYTEST_SUMMARY.search(text) for text in visit.outputs):
            problems.append(f"/{path}: no pytest summary ('N passed in ...') in any output")
        for text in visit.outputs:
            for match in MACHINERY.finditer(text):
                problems.append(f"/{path}: an output shows {match[0]!r}: {_words(text)[:120]!r}")
    assert not problems, "\n".join(problems)


def test_chapters_say_why_a_cell_fails(site: Site, visits: dict[str, Visit]) -> None:
    problems = []
    for name, path in site.chapters.items():
        wanted, shown = _intended_failures(NOTEBOOKS / name), visits[path].failures
        if not wanted:
            problems.append(f"notebooks/{name}: no cell marked to fail with a recipes.why")
        elif shown != wanted:
            missing = [line for line in wanted if line not in shown]
            extra = [line for line in shown if line not in wanted]
            problems.append(f"/{path}: {len(shown)} 'Fails on purpose.' lines, {len(wanted)} "
                            f"wanted; missing {missing[:2]}, not wanted {extra[:2]}")
    assert not problems, "\n".join(problems)


def test_binder_and_download_links(site: Site, visits: dict[str, Visit]) -> None:
    problems = []
    for name, path in site.chapters.items():
        visit = visits[path]
        binder = BINDER.format(slug=site.repo_slug, name=name)
        if visit.binder != [binder]:
            problems.append(f"/{path}: 'Launch in Binder' links are {visit.binder}, "
                            f"not [{binder!r}]")
        if visit.download != [(name, True)]:
            problems.append(f"/{path}: 'Download the notebook' links (href, download attribute) "
                            f"are {visit.download}, not [({name!r}, True)]")
        if visit.downloaded is None:
            continue
        filename, content = visit.downloaded
        if filename != name:
            problems.append(f"/{path}: the download is named {filename}, not {name}")
        if content != (NOTEBOOKS / name).read_bytes():
            problems.append(f"/{path}: the downloaded notebook is not notebooks/{name} as stored")
    assert not problems, "\n".join(problems)


# Open every collapsed <details> around a copy button, outermost first, as a reader would;
# then the code its block shows: Material's names its block, a notebook cell's is its own.
_SHOWN_CODE = """button => {
  const closed = [];
  for (let d = button.closest('details'); d; d = d.parentElement.closest('details')) {
    closed.unshift(d);
  }
  closed.filter(d => !d.open).forEach(d => d.querySelector(':scope > summary').click());
  const target = button.getAttribute('data-clipboard-target');
  const code = target ? document.querySelector(target)
                      : button.closest('.jp-InputArea')?.querySelector('pre');
  return code ? code.innerText : null;
}"""


def _to_try(buttons: Any) -> list[int]:
    """Every Material copy button, and of a chapter's cells the first and the first magic."""
    cells = buttons.evaluate_all("""buttons => buttons.map(b => b.tagName === 'CLIPBOARD-COPY'
        ? (b.closest('.jp-InputArea')?.querySelector('pre')?.innerText ?? '') : null)""")
    chosen = [i for i, code in enumerate(cells) if code is None]
    firsts = [i for i, code in enumerate(cells) if code is not None]
    magics = [i for i in firsts if cells[i].startswith("%%")]
    return sorted(set(chosen + firsts[:1] + magics[:1]))


def test_copy_buttons_copy_the_code(site: Site, visits: dict[str, Visit]) -> None:
    """Material's copy button on each code block; mkdocs-jupyter's on a chapter's cells."""
    nothing = "(nothing copied)"
    # Every page with Material's copy buttons; of the chapters, which all look alike, one.
    chapters = [path for path in site.chapters.values() if visits[path].copy_buttons]
    pages = [path for path, visit in visits.items()
             if visit.copy_buttons and path not in site.chapters.values()]
    assert pages, "no Material copy button on any page"
    assert chapters, "no copy button on any chapter's cells"
    pages.append(chapters[0])
    problems, tried = [], 0
    with site.page(clipboard=True) as (page, evidence):
        for path in pages:
            site.open(page, path, wait_until="load")
            buttons = page.locator(COPY_BUTTONS)
            for i in _to_try(buttons):
                button = buttons.nth(i)
                code = button.evaluate(_SHOWN_CODE)
                page.evaluate("text => navigator.clipboard.writeText(text)", nothing)
                button.click()
                deadline = time.monotonic() + 2  # the copy is asynchronous
                while (copied := page.evaluate("navigator.clipboard.readText()")) == nothing:
                    if time.monotonic() > deadline:
                        break
                    page.wait_for_timeout(50)
                tried += 1
                if not code or copied.rstrip("\n") != code.rstrip("\n"):
                    problems.append(f"/{path}, copy button {i}: copied {copied[:60]!r}, the "
                                    f"block reads {(code or '')[:60]!r}")
    print(f"{tried} copy buttons tried on {len(pages)} pages")
    assert not problems + evidence.problems, "\n".join(problems + evidence.problems)


@pytest.mark.parametrize(("query", "page_path"), [
    ("Per-test transactions", "recipes/transactions/"),  # a recipe's name
    ("rollback_transaction", "recipes/transactions/"),  # a function the recipe defines
])
def test_search_finds_a_recipe(site: Site, query: str, page_path: str) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    assert page_path in site.pages
    with site.page() as (page, evidence):
        site.open(page, "", wait_until="load")
        page.locator("input.md-search__input").click()
        page.keyboard.type(query)
        try:
            page.wait_for_function(
                """path => Array.from(document.querySelectorAll('.md-search-result__item a'))
                     .some(a => new URL(a.href).pathname === path)""",
                arg="/" + page_path, timeout=10_000)
        except PlaywrightTimeout:  # say what it finds instead
            found = page.eval_on_selector_all(
                ".md-search-result__item a", "links => links.map(a => new URL(a.href).pathname)")
            pytest.fail(f"searching {query!r} does not find /{page_path}; it finds {found}")
        finally:
            page.screenshot(path=_shot(f"search_{query}"))
        assert not evidence.problems, "\n".join(evidence.problems)


def test_phone_screen_hides_prompts(site: Site) -> None:
    path = next(iter(site.chapters.values()))
    with site.page(viewport=PHONE) as (page, evidence):
        site.open(page, path, wait_until="load")
        page.screenshot(path=_shot(f"phone_{path}"))
        total = page.locator(".jp-InputPrompt").count()
        shown = page.eval_on_selector_all(
            ".jp-InputPrompt", "els => els.filter(el => el.checkVisibility()).length")
        assert total, f"/{path}: no In [n]: prompt (.jp-InputPrompt) on the page at all"
        assert shown == 0, f"/{path}: {shown} of {total} In [n]: prompts shown at 390 px wide"
        assert not evidence.problems, "\n".join(evidence.problems)
