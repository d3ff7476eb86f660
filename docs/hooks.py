"""MkDocs hook: "Launch in Binder" and "Download the notebook" on every chapter page, and
links from a chapter to the recipe pages that resolve (a missing page fails the build).

The repository is named once, as ``extra.repo_slug`` ("owner/name") in ``mkdocs.yml``; this
hook derives the repository link and the Binder links from it. The download link points at
the copy of the executed notebook that mkdocs-jupyter's ``include_source`` puts beside the page.
"""

from __future__ import annotations

import html
import posixpath
import re
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import Files
from mkdocs.structure.pages import Page

__all__ = ["on_config", "on_page_content"]

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


def on_page_content(content: str, page: Page, config: MkDocsConfig, files: Files, **_: Any) -> str:
    source = page.file.src_uri
    if not (source.startswith("chapters/") and source.endswith(".ipynb")):
        return content
    content = _fix_links(content, page, files)
    name = posixpath.basename(source)
    binder = BINDER.format(slug=config.extra["repo_slug"], name=name)
    primary = "md-button md-button--primary"
    launch = f'<a class="{primary}" href="{html.escape(binder)}">Launch in Binder</a>'
    # Relative: include_source copies the notebook into the page's own folder.
    download = f'<a class="md-button" href="{html.escape(name)}" download>Download the notebook</a>'
    links = f'<p class="chapter-links">{launch} {download}</p>\n'
    return links + content
