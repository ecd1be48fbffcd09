"""The documentation site (``mkdocs.yml``): it builds with ``mkdocs build --strict``, so a broken link
or anchor, a missing include or a missing API object fails the suite, and its key pages hold what
they promise: the home page, the API reference generated from the docstrings, and the committed
reports, included as they are on disk now (never copies).

The build needs the docs extra (``pip install -e ".[docs]"``; the test extra includes it): without
it these tests fail and say so, they are never skipped.
"""

from __future__ import annotations

import html
import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

#: module -> package that provides it, for the failure message
DOCS_TOOLS = {
    "mkdocs": "mkdocs",
    "material": "mkdocs-material",
    "mkdocstrings_handlers.python": "mkdocstrings[python]",
    "mkdocs_include_markdown_plugin": "mkdocs-include-markdown-plugin",
    "mdx_truly_sane_lists": "mdx_truly_sane_lists",
}
TABLE1 = ROOT / "reproductions" / "table1" / "table1.md"


def require_docs_tools() -> None:
    missing = []
    for module, package in DOCS_TOOLS.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # the parent package of a dotted name is missing
            found = False
        if not found:
            missing.append(package)
    if missing:
        pytest.fail(
            f"the documentation tools are not installed ({', '.join(missing)}): "
            f'install the docs extra, pip install -e ".[docs]" (the test extra includes it), '
            f"or run `make test`, which installs the test extra",
            pytrace=False,
        )


def page_text(path: Path) -> str:
    """A built page as a reader sees it: tags dropped, entities decoded, whitespace collapsed."""
    text = re.sub(r"<[^>]+>", "", path.read_text(encoding="utf-8"))
    return re.sub(r"\s+", " ", html.unescape(text))


def table1_number(report: str) -> str:
    """A number of the report's first table, as it is written there now: the first of our results
    (column 'ours'), else, while every run of that table is still running, the paper's."""
    rows = [line for line in report.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    for column in ("ours", "MNIST paper"):
        index = header.index(column) if column in header else None
        for row in rows[2:]:
            cells = [cell.strip() for cell in row.strip("|").split("|")]
            if index is not None and index < len(cells) and re.fullmatch(r"\d+\.\d+%", cells[index]):
                return cells[index]
    raise AssertionError(f"no percentage in the first table of {TABLE1}")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> tuple[Path, str, float]:
    """The site, built once for this module into a temporary folder: (folder, report read, seconds)."""
    require_docs_tools()
    out = tmp_path_factory.mktemp("site")
    report = TABLE1.read_text(encoding="utf-8")  # before the build: the reports may be rewritten meanwhile
    start = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    seconds = time.perf_counter() - start
    assert done.returncode == 0, f"mkdocs build --strict failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
    return out, report, seconds


@pytest.mark.slow
def test_docs_build_strict_with_key_pages(site):
    out, report, _ = site
    home = page_text(out / "index.html")
    assert "make run" in home and "make test" in home  # getting started: the two commands

    # The API reference: SparsityMonitor's signature, generated from the source.
    api = page_text(out / "api" / "callbacks" / "index.html")
    signature = re.search(r"SparsityMonitor\(\s*modules: .*?\)", api)
    assert signature, "no SparsityMonitor(modules: ...) signature on api/callbacks/"
    assert "unit_dim" in signature[0], signature[0]
    assert "DivergenceGuard" in api

    # The reproductions: the committed report, included as it is on disk now.
    table1 = page_text(out / "reproductions" / "table1" / "index.html")
    title = report.splitlines()[0].lstrip("# ").strip()
    assert title in table1
    number = table1_number(report)
    assert number in table1, f"{number} of {TABLE1.relative_to(ROOT)} is not on reproductions/table1/"

    # A report's link to another report is a link to that report's page.
    overview = (out / "reproductions" / "index.html").read_text(encoding="utf-8")
    assert 'href="table1/"' in overview


def load_hook():
    require_docs_tools()
    spec = importlib.util.spec_from_file_location("repo_links", ROOT / "docs" / "hooks" / "repo_links.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_repo_links_hook_rewrites_and_keeps_broken_links(tmp_path):
    """Links that leave docs/: an included file -> its page; another repository file -> plain text
    (no repo_url); a path that exists nowhere -> left for MkDocs' strict check to report."""
    hook = load_hook()
    (tmp_path / "docs" / "reports").mkdir(parents=True)
    (tmp_path / "reports" / "a").mkdir(parents=True)
    (tmp_path / "reports" / "a" / "a.md").write_text("# A\n")
    (tmp_path / "bench.md").write_text("# bench\n")
    hook.STATE.root, hook.STATE.docs, hook.STATE.repo_url = tmp_path, tmp_path / "docs", None
    hook.STATE.included = {"reports/a/a.md": "reports/a.md"}
    page = "reports/index.md"
    assert hook.rewrite("../../reports/a/a.md#x", page) == ("a.md#x", None)
    assert hook.rewrite("../../bench.md", page) == (None, "bench.md")
    assert hook.rewrite("../../reports/a/", page) == (None, "reports/a/")
    assert hook.rewrite("../../reports/missing.md", page) == (None, None)
    assert hook.rewrite("other.md", page) == (None, None)  # inside docs/: MkDocs checks it
    assert hook.rewrite("https://example.org/x.md", page) == (None, None)
    hook.STATE.repo_url = "https://example.org/owner/repo"
    assert hook.rewrite("../../bench.md", page) == ("https://example.org/owner/repo/blob/HEAD/bench.md", None)


def test_list_items_after_a_nested_paragraph_stay_items():
    hook = load_hook()
    github = "- **one**\n\n  more of one.\n- **two**\n- three\n\n```\n- not an item\n```\n"
    assert hook.separate_list_items(github) == (
        "- **one**\n\n  more of one.\n\n- **two**\n- three\n\n```\n- not an item\n```\n"
    )
