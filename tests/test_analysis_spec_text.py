"""Spec text (name, description, arm names, a dataset folder's path) reaches report.md and report.html as text:
no HTML element, heading, table, link or remote image of its own, whether report.md is shown by a viewer that
renders raw HTML (as GitHub does) or turned into report.html (issue 18)."""
from __future__ import annotations

from html.parser import HTMLParser

from markdown_it import MarkdownIt

from ablate.analysis import analyze
from ablate.analysis.markdown_text import code, text
from helpers.runs import BASE, build_run, spec_doc

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(2)>"
REMOTE = "![tracker](https://evil.example/pixel.png)"
DESCRIPTION = (f"Residual study {SCRIPT} and {IMG} with {REMOTE} &amp; *bold* `tick`\n# Injected heading\n\n"
               "| a | b |\n|---|---|\n| 1 | 2 |\n")
ARMS = [{"name": f"res {SCRIPT}", "residual": True}, {"name": f"plain {IMG} | {REMOTE}", "residual": False}]


class Elements(HTMLParser):
    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.headings: list[str] = []
        self.cells: list[str] = []
        self._in: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in.append(tag)

    def handle_endtag(self, tag):
        if tag in self._in:
            del self._in[len(self._in) - 1 - self._in[::-1].index(tag):]

    def handle_data(self, data):
        self.text.append(data)
        if any(t in ("h1", "h2", "h3", "h4", "h5", "h6") for t in self._in):
            self.headings.append(data)
        if any(t in ("td", "th") for t in self._in):
            self.cells.append(data.strip())


def check_no_injected_markup(page: Elements) -> None:
    names = [t for t, _ in page.tags]
    assert "script" not in names
    for tag, attrs in page.tags:
        assert not any(k.startswith("on") for k in attrs), (tag, attrs)
        if tag == "img":
            assert not attrs.get("src", "").startswith(("http", "//", "x")), attrs
        if tag == "a":
            assert not attrs.get("href", "").startswith(("http", "//")), attrs
    assert not any("Injected heading" in h for h in page.headings)
    assert "a" not in page.cells and "b" not in page.cells  # the description's table is not a table


def run_with_spec_text(tmp_path):
    doc = spec_doc(name=f"evil {SCRIPT}", description=DESCRIPTION, factors=None, arms=ARMS,
                   base={**BASE, "dataset": f"folder:/data/{IMG}"}, seeds=[0, 1])
    trials = [{"arm": a["name"], "seed": s, "test_acc": acc} for s in (0, 1)
              for a, acc in zip(ARMS, (0.9 + 0.01 * s, 0.8))]
    return build_run(tmp_path / "run", trials, doc=doc)


def test_spec_text_is_shown_as_text_in_report_md_and_report_html(tmp_path):
    result = analyze(run_with_spec_text(tmp_path))
    md = result.report.read_text(encoding="utf-8")
    # report.md as a viewer that renders raw HTML would show it
    shown = Elements(MarkdownIt("commonmark", {"html": True}).enable("table").render(md))
    check_no_injected_markup(shown)
    words = " ".join("".join(shown.text).split())
    for literal in (SCRIPT, IMG, REMOTE, "&amp; *bold* `tick` # Injected heading | a | b |", f"res {SCRIPT}"):
        assert literal in words, literal
    # the figures of report.md are still images, all of them files beside it
    assert [a["src"] for t, a in shown.tags if t == "img"] and all(
        a["src"].startswith("figures/") for t, a in shown.tags if t == "img")
    page = Elements(result.html.read_text(encoding="utf-8"))
    check_no_injected_markup(page)
    assert [t for t, _ in page.tags].count("h1") == 1
    html_words = " ".join("".join(page.text).split())
    assert SCRIPT in html_words and IMG in html_words and REMOTE in html_words
    methods = Elements(MarkdownIt("commonmark", {"html": True}).render(result.methods.read_text(encoding="utf-8")))
    check_no_injected_markup(methods)


def test_text_and_code_spans_render_literally():
    md = MarkdownIt("commonmark", {"html": True}).enable("table")
    for value in (SCRIPT, IMG, REMOTE, "- item", "# h", "a\nb", "``x`", "&lt;", "1. one", ""):
        for wrapped in (text(value), code(value)):
            rendered = Elements(md.render(f"x {wrapped}"))
            assert not [t for t, _ in rendered.tags if t not in ("p", "code")], (value, wrapped)
            assert " ".join("".join(rendered.text).split()) == " ".join(f"x {value}".split()).strip()
    cell = Elements(md.render(f"| h |\n|---|\n| {code('a|b', table=True)} |\n"))
    assert cell.cells == ["h", "a|b"]
