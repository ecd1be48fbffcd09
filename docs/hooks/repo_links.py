"""MkDocs hook: links from the site's pages to files of the repository that lie outside ``docs/``.

The site includes the reproductions' committed reports as they are (``{% include-markdown %}``),
and those reports, like ``docs/paper.md``, link to other files of the repository by relative
paths that work on a checkout or a code host (``../docs/paper.md#...``, ``table1/table1.md``,
``investigation/``). The include plugin first rewrites such a link so that it points from the
including page to the same file. Then, before MkDocs checks the page's links, this hook looks at
every relative link that leaves ``docs/`` and still lands inside the repository:

- a file that a page of the site includes whole is that page: the link is rewritten to point to
  it (anchors kept, so MkDocs checks them against the page's headings);
- any other file or folder that exists (``benchmarks/README.md``, ``reproductions/investigation/``)
  is not part of the site: the link goes to it on the code host when ``repo_url`` is set in
  ``mkdocs.yml``, else it becomes plain text followed by the file's path in the repository;
- a path that exists nowhere is left as it is, so that ``mkdocs build --strict`` fails on it as on
  any broken link.

Links inside ``docs/``, to other sites, and anchors on the same page are not touched: MkDocs
checks them as usual (``validation`` in ``mkdocs.yml`` makes every finding a warning, and
``--strict`` a failure).

The same files are written for GitHub's Markdown, where a list item ends the paragraph above it;
``separate_list_items`` adds the blank line Python-Markdown needs there (the 2-space nesting
itself is ``mdx_truly_sane_lists``' ``nested_indent: 2`` in ``mkdocs.yml``).
"""

from __future__ import annotations

import html
import os
import posixpath
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit
from xml.etree import ElementTree as etree

from markdown import Extension, Markdown
from markdown.util import HTML_PLACEHOLDER
from markdown.treeprocessors import Treeprocessor
from mkdocs.plugins import event_priority

STASHED = re.escape(HTML_PLACEHOLDER).replace(re.escape("%s"), "%s")

#: ``{% include-markdown "path" %}``: the include plugin reads a path that starts with ``./`` or
#: ``../`` from the including page's folder, any other relative path from docs/.
INCLUDE = re.compile(r"""\{%\s*include-markdown\s+(["'])(?P<path>[^"']+)\1""")


class _State:
    root: Path | None = None  # the repository: the folder of mkdocs.yml
    docs: Path | None = None  # docs_dir
    repo_url: str | None = None
    included: dict[str, str] = {}  # repository path of an included file -> src_uri of its page
    page_src: str | None = None  # src_uri of the page being rendered


STATE = _State()


def on_config(config):
    STATE.root = Path(config.config_file_path).resolve().parent
    STATE.docs = Path(config.docs_dir).resolve()
    STATE.repo_url = (config.repo_url or "").rstrip("/") or None
    config.markdown_extensions.append(RepoLinksExtension())
    return config


def on_files(files, config):
    """Which page stands for which included file: each ``include-markdown`` of a page."""
    STATE.included = {}
    for file in files.documentation_pages():
        text = Path(file.abs_src_path).read_text(encoding="utf-8")
        for match in INCLUDE.finditer(text):
            path = Path(match["path"])
            if path.is_absolute():
                target = path
            elif match["path"].startswith(("./", "../")):
                target = Path(file.abs_src_path).parent / path
            else:
                target = STATE.docs / path
            repo_path = _repo_path(Path(os.path.normpath(target)))
            if repo_path is not None:
                STATE.included.setdefault(repo_path, file.src_uri)
    return files


@event_priority(-100)  # after the include plugin (priority 100) has put the reports in
def on_page_markdown(markdown, page, config, files):
    STATE.page_src = page.file.src_uri
    return separate_list_items(markdown)


LIST_ITEM = re.compile(r"^(\s*)([-*+]|\d+\.)\s")
FENCE = re.compile(r"^\s*(```|~~~)")


def separate_list_items(markdown: str) -> str:
    """A blank line before a list item that follows a paragraph inside the item before it.

    On GitHub a list item ends the paragraph above it; Python-Markdown reads the item as more of
    that paragraph once its list item holds a blank line (a nested list, a table, a second
    paragraph, as in docs/paper.md). The blank line added there changes nothing else: that item is
    already loose.
    """
    out: list[str] = []
    fence = None
    last_item = last_blank = -1
    for line in markdown.split("\n"):
        opening = FENCE.match(line)
        if fence is not None:
            if opening and opening[1] == fence:
                fence = None
        elif opening:
            fence = opening[1]
        elif not line.strip():
            last_blank = len(out)
        elif LIST_ITEM.match(line):
            if out and out[-1].strip() and last_item >= 0 and last_blank > last_item:
                out.append("")
            last_item = len(out)
        out.append(line)
    return "\n".join(out)


def _repo_path(path: Path) -> str | None:
    """``path`` relative to the repository, POSIX style, or None when it lies outside it."""
    try:
        return path.relative_to(STATE.root).as_posix()
    except ValueError:
        return None


def rewrite(url: str, page_src: str) -> tuple[str | None, str | None]:
    """(new url, None), (None, repository path) for plain text, or (None, None): leave the link."""
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or not parts.path or parts.path.startswith("/"):
        return None, None
    page_dir = (STATE.docs / page_src).parent
    target = Path(os.path.normpath(page_dir / unquote(parts.path)))
    if target == STATE.docs or STATE.docs in target.parents:
        return None, None  # a page or file of the site: MkDocs checks it
    repo_path = _repo_path(target)
    if repo_path is None or not target.exists():
        return None, None  # outside the repository, or nowhere: MkDocs reports it
    page = STATE.included.get(repo_path)
    if page is not None:
        path = posixpath.relpath(page, posixpath.dirname(page_src) or ".")
        return urlunsplit(("", "", path, parts.query, parts.fragment)), None
    if STATE.repo_url:
        kind = "tree" if target.is_dir() else "blob"
        return urlunsplit(("", "", f"{STATE.repo_url}/{kind}/HEAD/{repo_path}", parts.query, parts.fragment)), None
    return None, repo_path + ("/" if target.is_dir() else "")


class RepoLinksTreeprocessor(Treeprocessor):
    def run(self, root: etree.Element) -> None:
        page_src = STATE.page_src
        if page_src is None:  # a docstring rendered outside a page's conversion
            return
        for element in root.iter("a"):
            url = element.get("href")
            if not url:
                continue
            new_url, plain = rewrite(url, page_src)
            if new_url is not None:
                element.set("href", new_url)
            elif plain is not None:
                _unlink(element, plain, self.visible_text(element))

    def visible_text(self, element: etree.Element) -> str:
        """The element's text, with what extensions stashed away (inline code, ...) put back."""
        text = "".join(element.itertext())
        stash = self.md.htmlStash.rawHtmlBlocks

        def unstash(match: re.Match) -> str:
            index = int(match[1])
            return str(stash[index]) if index < len(stash) else ""

        text = re.sub(STASHED.replace("%s", r"(\d+)"), unstash, text)
        return html.unescape(re.sub(r"<[^>]*>", "", text))


def _unlink(element: etree.Element, repo_path: str, text: str) -> None:
    """The link's text stays, with the file's path in the repository after it unless it shows it."""
    del element.attrib["href"]
    element.tag = "span"
    element.set("class", "repo-path")
    element.set("title", f"in the repository: {repo_path}")
    if repo_path.rstrip("/") not in text:
        lead = " (in the repository: "
        children = list(element)
        if children:
            children[-1].tail = (children[-1].tail or "") + lead
        else:
            element.text = (element.text or "") + lead
        code = etree.SubElement(element, "code")
        code.text = repo_path
        code.tail = ")"


class RepoLinksExtension(Extension):
    def extendMarkdown(self, md: Markdown) -> None:  # noqa: N802 (Markdown's name)
        # before MkDocs' own link check ("relpath", priority 0)
        md.treeprocessors.register(RepoLinksTreeprocessor(md), "repo_links", 1)
