"""MkDocs hook: "Launch in Binder" and "Download the notebook" on every chapter page, and
links from a chapter to the recipe pages that resolve (a missing page fails the build).

The repository is named once, as ``extra.repo_slug`` ("owner/name") in ``mkdocs.yml``; this
hook derives the repository link and the Binder links from it. The download link points at
the copy of the executed notebook that mkdocs-jupyter's ``include_source`` puts beside the page.

It also renders the tables of ``benchmark.md`` from ``docs/bench/results.json`` (what
``python -m recipes bench --json`` writes): each ``<!-- bench:NAME -->`` there becomes a table
(``machine``: the line saying what the run was measured on), so the page carries no copy of the
figures.
"""

from __future__ import annotations

import hashlib
import html
import json
import posixpath
import re
import shutil
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import Files
from mkdocs.structure.pages import Page
from mkdocs.structure.toc import get_toc

__all__ = ["on_config", "on_page_content", "on_page_markdown", "on_post_build", "on_post_page"]

BINDER = "https://mybinder.org/v2/gh/{slug}/HEAD?urlpath=lab/tree/notebooks/{name}"
_SLUG = re.compile(r"[\w.-]+/[\w.-]+")


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    slug = config.extra.get("repo_slug")
    if not isinstance(slug, str) or not _SLUG.fullmatch(slug):
        raise PluginError(f'set extra.repo_slug: "owner/name" in mkdocs.yml (found {slug!r})')
    if not config.repo_url:  # the theme's repository link, from the same single setting
        config.repo_url = f"https://github.com/{slug}"
        config.repo_name = slug
    return config


_MD_LINK = re.compile(r'href="(?!https?:|#|/)([^"#]+\.md)(#[^"]*)?"')


def _fix_links(content: str, page: Page, files: Files) -> str:
    """Resolve a notebook's links to Markdown pages, which mkdocs-jupyter leaves as written."""

    def resolve(match: re.Match[str]) -> str:
        target = posixpath.normpath(posixpath.join(posixpath.dirname(page.file.src_uri), match[1]))
        file = files.get_file_from_path(target)
        if file is None:
            raise PluginError(f"{page.file.src_uri}: link to a missing page {match[1]!r}")
        return f'href="{file.url_relative_to(page.file)}{match[2] or ""}"'

    return _MD_LINK.sub(resolve, content)


_HEADING = re.compile(r'<h([1-6]) id="([^"]+)"[^>]*>(.*?)</h\1>', re.S)
_ANCHOR_LINK = re.compile(r'<a class="(?:anchor-link|headerlink)"[^>]*>.*?</a>', re.S)


def _toc_from_headings(content: str) -> list[dict[str, Any]]:
    """Table-of-contents tokens from the rendered headings, with their ids and their code.

    Python-Markdown's table of contents drops inline code from a heading's name, and
    mkdocs-jupyter's, built from a Markdown conversion of the notebook, also derives other ids
    than the page has.
    """
    tokens: list[dict[str, Any]] = []
    open_: list[dict[str, Any]] = []  # the innermost heading at each level, outermost first
    for match in _HEADING.finditer(content):
        name = _ANCHOR_LINK.sub("", match[3]).strip()
        token = {"level": int(match[1]), "id": match[2], "name": name, "children": []}
        while open_ and open_[-1]["level"] >= token["level"]:
            open_.pop()
        (open_[-1]["children"] if open_ else tokens).append(token)
        open_.append(token)
    return tokens


def _is_chapter(page: Page) -> bool:
    source = page.file.src_uri
    return source.startswith("chapters/") and source.endswith(".ipynb")


# In a chapter, what search should not index: prompts and the copy buttons' "Copied!" notice.
_NOT_SEARCHED = re.compile(r'<div class="(jp-InputPrompt|jp-OutputPrompt|zeroclipboard-container)')


def on_page_content(content: str, page: Page, config: MkDocsConfig, files: Files, **_: Any) -> str:
    page.toc = get_toc(_toc_from_headings(content))
    if not _is_chapter(page):
        return content
    content = _NOT_SEARCHED.sub(r'<div data-search-exclude class="\1', content)
    content = _fix_links(content, page, files)
    name = posixpath.basename(page.file.src_uri)
    binder = BINDER.format(slug=config.extra["repo_slug"], name=name)
    primary = "md-button md-button--primary"
    launch = f'<a class="{primary}" href="{html.escape(binder)}">Launch in Binder</a>'
    # Relative: include_source copies the notebook into the page's own folder.
    download = f'<a class="md-button" href="{html.escape(name)}" download>Download the notebook</a>'
    links = f'<p class="chapter-links">{launch} {download}</p>\n'
    return links + content


# -- chapter pages: one shared stylesheet, no unused scripts, the stored notebook to download

_STYLE = re.compile(r"<style[^>]*>(.*?)</style>\s*", re.S)
_UNUSED = [  # what mkdocs-jupyter adds to every page that the chapters never use
    re.compile(r'<!-- Load mathjax -->.*?<script type="text/x-mathjax-config">.*?</script>\s*', re.S),
    re.compile(r'<script type="module">\s*document\.addEventListener\("DOMContentLoaded".*?'
               r"renderOneMarmaid.*?</script>\s*<style>\s*\.jp-Mermaid.*?</style>\s*", re.S),
]
_stylesheets: dict[str, str] = {}  # file name in the site -> its text


def on_post_page(output: str, page: Page, config: MkDocsConfig, **_: Any) -> str:
    """Move each chapter page's inline notebook CSS (about 0.6 MB, the same on every page) into
    one cached stylesheet, and drop the MathJax and Mermaid loaders: no chapter uses them."""
    if not _is_chapter(page):
        return output
    for pattern in _UNUSED:
        output, found = pattern.subn("", output, count=1)
        if not found:
            raise PluginError(f"{page.file.src_uri}: a loader moved; update docs/hooks.py")
    if 'class="jp-Mermaid' in output:  # (math is not detectable: chapters write none)
        raise PluginError(f"{page.file.src_uri}: a Mermaid diagram; keep its loader (docs/hooks.py)")
    # The notebook's styles are the long ones; one more holds a Python list's repr, not CSS.
    styles = [m for m in _STYLE.finditer(output) if len(m[1]) > 1000]
    css = "\n".join(m[1] for m in styles if not m[1].lstrip().startswith("["))
    if not css:
        raise PluginError(f"{page.file.src_uri}: no notebook styles found; update docs/hooks.py")
    name = f"assets/notebook-{hashlib.sha256(css.encode()).hexdigest()[:8]}.css"
    _stylesheets[name] = css
    href = posixpath.relpath(name, posixpath.dirname(page.file.dest_uri))
    for match in reversed(styles):
        output = output[: match.start()] + output[match.end():]
    link = f'<link rel="stylesheet" href="{html.escape(href)}">\n'
    return output.replace("</head>", link + "</head>", 1)


def on_post_build(config: MkDocsConfig, **_: Any) -> None:
    site = Path(config.site_dir)
    for name, css in _stylesheets.items():
        (site / name).write_text(css)
    # "Download the notebook" gives the notebook as stored, without outputs: what a reader runs.
    stored = Path(config.config_file_path).parent / "notebooks"
    for page_dir in (site / "chapters").iterdir():
        source = stored / f"{page_dir.name}.ipynb"
        if page_dir.is_dir() and source.is_file():
            shutil.copyfile(source, page_dir / source.name)


# -- benchmark.md: tables rendered from docs/bench/results.json at build time ----------------

_BENCH = re.compile(r"<!-- bench:(\w+) -->")


def _table(headers: list[str], rows: list[list[str]], align: str) -> str:
    """A Markdown table; ``align`` has an l or r per column."""
    rule = ["---:" if side == "r" else "---" for side in align]
    return "\n".join("| " + " | ".join(line) + " |" for line in [headers, rule, *rows])


def _verdicts(b: str, figures: dict[str, Any]) -> tuple[list[list[str]], list[list[str]]]:
    """The comparisons and the targets of one database, as table rows. A difference counts
    only where it is larger than the two figures' spreads added up (how far each moved between
    the two halves of its runs); the targets come judged by ``python -m recipes bench`` itself
    (``recipes.bench.targets``), by the same rule."""

    def compared(value: float, base: float, noise: float) -> list[str]:
        ratio = f"{value / base:.2f}" if base > 0 else "-"
        if abs(value - base) <= noise:
            return [ratio, "within noise"]
        return [ratio, "more" if value > base else "less"]

    ms = {r["strategy"][-2]: r for r in figures["strategies"]}  # "... (a)" -> "a"
    suite = {(r["suite"], r["loop"]): r for r in figures["suites"] if r["per_test_ms"] is not None}
    names = {"b": "db_session (b)", "c": "truncate (c)", "d": "drop + create (d)"}
    comparisons = [
        [b, f"{name} against the inline recipe (a), in process",
         *compared(ms[key]["median_ms"], ms["a"]["median_ms"],
                   (ms[key].get("spread_ms") or 0) + (ms["a"].get("spread_ms") or 0))]
        for key, name in names.items()
    ]
    pairs = [(("recipes db_session", "session"), ("inline savepoint recipe", "session"),
              "db_session against the inline recipe, session loop, pytest"),
             (("recipes db_session", "function"), ("recipes db_session", "session"),
              "db_session, function loop against session loop, pytest")]
    pairs += [(("recipes db_session", loop), ("pytest-sqla", loop),
               f"db_session against pytest-sqla, {loop} loop, pytest") for loop in ("session", "function")]
    for mine, other, words in pairs:
        if mine in suite and other in suite:
            one, two = suite[mine], suite[other]
            noise = (one.get("spread_ms") or 0) + (two.get("spread_ms") or 0)
            comparisons.append([b, words, *compared(one["per_test_ms"], two["per_test_ms"], noise)])
    targets = [[b, t["target"], t["figure"], t["verdict"]] for t in figures.get("targets", [])]
    return comparisons, targets


def _bench_blocks(results: dict[str, Any]) -> dict[str, str]:
    machine, backends = results["machine"], results["backends"]
    verdicts = [_verdicts(b, figures) for b, figures in backends.items()]
    rounds = {b: f["strategies"][0]["samples"] for b, f in backends.items()}

    def spread(row: dict[str, Any]) -> str:
        return "-" if row.get("spread_ms") is None else f"± {row['spread_ms']:.2f}"

    def layers(f: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        return [(name, layer if isinstance(layer, dict) else {"ms": layer})
                for name, layer in f["breakdown"].items()]

    suites = (f"suites of {results['tests']} tests, against {results.get('base_tests', '?')} for "
              f"the fixed costs, minimum of {results.get('runs', '?')} interleaved runs")
    return {
        "machine": f"{machine['cpu']}, {machine['cores']} cores, Python {machine['python']}, "
        f"{machine['system']}; {', '.join(machine.get('databases', {}).values())}. In process: "
        + ", ".join(f"{n} rounds on {b}" for b, n in rounds.items())
        + f". Through pytest: {suites}."
        + (f" Command: `{results['command']}`." if results.get("command") else ""),
        "strategies": _table(
            ["database", "strategy", "ms per test (median)", "spread", "x (a)"],
            [[b, r["strategy"], f"{r['median_ms']:.2f}", spread(r), f"{r['ratio']:.2f}"]
             for b, f in backends.items() for r in f["strategies"]], "llrrr"),
        "suites": _table(
            ["database", "suite", "loop", "wall s", "ms per test above no database", "spread",
             "pytest CPU ms per test"],
            [[b, r["suite"], r["loop"], f"{r['wall_s']:.2f}",
              "-" if r["per_test_ms"] is None else f"{r['per_test_ms']:.2f}", spread(r),
              "-" if r.get("cpu_ms") is None else f"{r['cpu_ms']:.2f}"]
             for b, f in backends.items() for r in f["suites"]], "lllrrrr"),
        "breakdown": _table(
            ["database", "where", "layer", "ms (median)", "spread", "client CPU ms"],
            [[b, layer.get("group", ""), name.strip(), f"{layer['ms']:.2f}", spread(layer),
              "-" if layer.get("cpu_ms") is None else f"{layer['cpu_ms']:.2f}"]
             for b, f in backends.items() for name, layer in layers(f)], "lllrrr"),
        "xdist": _table(
            ["database", "workers", "wall s", "spread", "x (-n 0)"],
            [[b, f"-n {r['workers']}", f"{r['wall_s']:.2f}",
              "-" if r.get("spread_s") is None else f"± {r['spread_s']:.2f}",
              "-" if r.get("speedup") is None else f"{r['speedup']:.2f}"]
             for b, f in backends.items() for r in f.get("xdist", [])], "llrrr"),
        "xdist_cpu": _table(
            ["database", "workers", "CPU s: pytest", "workers", "rest of machine", "cores busy"],
            [[b, f"-n {r['workers']}",
              *("-" if r.get(key) is None else f"{r[key]:.2f}"
                for key in ("pytest_cpu_s", "workers_cpu_s", "rest_cpu_s", "cores"))]
             for b, f in backends.items() for r in f.get("xdist", [])], "llrrrr"),
        "comparisons": _table(["database", "comparison", "ratio", "verdict"],
                              [row for rows, _ in verdicts for row in rows], "llrl"),
        "targets": _table(["database", "target", "this run", "verdict"],
                          [row for _, rows in verdicts for row in rows], "llll"),
    }


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, **_: Any) -> str:
    if page.file.src_uri != "benchmark.md":
        return markdown
    source = Path(config.docs_dir) / "bench" / "results.json"
    try:
        blocks = _bench_blocks(json.loads(source.read_text()))
    except (OSError, ValueError, LookupError) as exc:
        detail = f"{type(exc).__name__}: {exc}"
        raise PluginError(f"benchmark.md: cannot read {source} ({detail})") from None

    def render(match: re.Match[str]) -> str:
        if match[1] not in blocks:
            raise PluginError(f"benchmark.md: no table {match[1]!r}; there are {', '.join(blocks)}")
        return blocks[match[1]]

    return _BENCH.sub(render, markdown)
