"""report.html of a real smoke study (`tuned_analysis` of helpers.background_studies): one self-contained file
with report.md's content, and what a real browser (headless Chromium) shows of it: every figure decoded and
drawn, the tables laid out, the page not blank. The browser tests skip, naming what they looked for, where no
Chromium is installed."""
from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from ablate.analysis.text.references import cited_as_text

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BLOCK = {"p", "li", "td", "th", "tr", "h1", "h2", "h3", "h4", "div", "figcaption", "pre", "table", "ul", "ol", "nav",
         "figure", "main", "body", "br", "section"}
WINDOW = (1280, 1600)


class Page(HTMLParser):
    """Tags, their attributes, ids, and the text as a reader sees it (block elements separated by spaces)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.chunks: list[str] = []
        self.hidden = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self.hidden = tag in ("style", "title")
        if tag in BLOCK:
            self.chunks.append(" ")

    def handle_endtag(self, tag):
        self.hidden = False
        if tag in BLOCK:
            self.chunks.append(" ")

    def handle_data(self, data):
        if not self.hidden:
            self.chunks.append(data)

    @property
    def words(self) -> str:
        return " ".join(_plain("".join(self.chunks)).split())

    def attrs(self, name: str) -> list[str]:
        return [a[name] for _, a in self.tags if a.get(name) is not None]


def _plain(text: str) -> str:
    """Markdown's markers gone (emphasis, code, table bars), so report.md and the page's text compare word by word."""
    return re.sub(r"[*`|]", "", text)


def browser() -> str | None:
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


needs_browser = pytest.mark.skipif(browser() is None, reason=f"no headless browser found (looked for {', '.join(BROWSERS)} "
                                   "on PATH); .ci/run installs chromium")


def chromium(page: Path, tmp: Path, *flags: str) -> str:
    cmd = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
           f"--user-data-dir={tmp / 'profile'}", f"--window-size={WINDOW[0]},{WINDOW[1]}", *flags, page.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
def test_report_html_is_one_file_that_links_to_nothing_outside_itself(tuned_analysis):
    text = tuned_analysis.html.read_text(encoding="utf-8")
    page = Page(text)
    # every image is an embedded PNG: exactly the figures the analysis drew
    images = page.attrs("src")
    assert len(images) == len(tuned_analysis.figures) == 8  # paired_differences among them
    assert all(src.startswith("data:image/png;base64,") for src in images)
    embedded = sorted(base64.b64decode(src.split(",", 1)[1]) for src in images)
    assert embedded == sorted(paths[0].read_bytes() for paths in tuned_analysis.figures.values())
    # the only links go to the page's own headings; nothing is fetched from anywhere
    ids = set(page.attrs("id"))
    assert page.attrs("href") and all(h.startswith("#") and h[1:] in ids for h in page.attrs("href"))
    assert not {tag for tag, _ in page.tags} & {"script", "link", "iframe", "object", "embed", "base", "frame"}
    for needle in ("http://", "https://", "file:", "url(", "@import", "src=\"figures", ".pdf\""):
        assert needle not in text, needle
    assert text.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in text


@pytest.mark.slow
def test_report_html_says_what_report_md_says_with_the_runs_metadata(tuned_analysis, tuned_study):
    page = Page(tuned_analysis.html.read_text(encoding="utf-8"))
    words = page.words
    md = tuned_analysis.report.read_text(encoding="utf-8")
    body = md[: md.index("## Figures")]
    checked = 0
    for block in re.split(r"\n\s*\n", body):
        for line in block.splitlines():
            if re.fullmatch(r"[|\-: ]+", line):  # a table's alignment row
                continue
            line = re.sub(r"^#+ |^- ", "", line)
            assert " ".join(_plain(line).split()) in words, line
            checked += 1
    assert checked > 40
    # every table of report.md, plus the metadata table
    assert sum(tag == "table" for tag, _ in page.tags) == md.count("\n|---") + 1
    for caption in tuned_analysis.captions.values():
        assert " ".join(_plain(caption).split()) in words
    # the lead sentence: the paired difference with its CI and the seeds 80 % power would need
    c = tuned_analysis.comparisons.iloc[0]
    assert (f"residual=true minus residual=false: {100 * c['diff']:+.1f} pp (95 % t-interval [{100 * c['diff_ci_low']:+.1f}, "
            f"{100 * c['diff_ci_high']:+.1f}] pp, 3 seed pairs, confirm stage), {c['verdict']} because") in words
    assert f"with 80 % power its verdict needs about {int(c['seeds_needed'])} seed pairs" in words
    # the run's metadata, read from its folder
    manifest = json.loads((tuned_study / "manifest.json").read_text())
    for value in (manifest["git_commit"], manifest["run_id"], manifest["started_at"], manifest["packages"]["torch"],
                  manifest["packages"]["optuna"], manifest["python"], "budget default", "cpu: 10 trials"):
        assert value in words, value
    assert "wall time" in words and "of trial time summed over 10 trials" in words
    assert " ".join((tuned_study / "spec.yaml").read_text().split()) in words
    # the methods paragraph, its pandoc citations shown as author and year
    paragraph = cited_as_text(tuned_analysis.methods.read_text().split("\n\n")[1])
    assert "[@" not in page.words and " ".join(_plain(paragraph).split()) in words


@pytest.mark.slow
@needs_browser
def test_chromium_shows_every_figure_and_table_and_a_page_that_is_not_blank(tuned_analysis, tmp_path):
    # A copy with a probe script: once the page has loaded, it writes what the browser actually laid out.
    probe = """<script>window.addEventListener('load', () => {
      const imgs = [...document.images], box = e => e.getBoundingClientRect();
      const drawn = imgs.filter(i => i.complete && i.naturalWidth > 0 && box(i).width > 100 && box(i).height > 50);
      const tables = [...document.querySelectorAll('table')].filter(t => box(t).height > 0 && t.rows.length > 1);
      const first = imgs[0], r = box(first);  // the picture inside the image's border
      document.body.setAttribute('data-probe', JSON.stringify({images: imgs.length, drawn: drawn.length,
        tables: tables.length, natural: first.naturalWidth,
        first: [r.left + first.clientLeft, r.top + first.clientTop, first.clientWidth, first.clientHeight]}));
    });</script>"""
    copy = tmp_path / "probe.html"
    copy.write_text(tuned_analysis.html.read_text(encoding="utf-8").replace("</body>", probe + "</body>"))
    dom = chromium(copy, tmp_path, "--dump-dom", "--virtual-time-budget=10000")
    found = re.search(r'data-probe="([^"]+)"', dom)
    assert found, dom[-2000:]
    probe = json.loads(found.group(1).replace("&quot;", '"'))
    tables = tuned_analysis.report.read_text().count("\n|---") + 1
    assert probe["images"] == probe["drawn"] == len(tuned_analysis.figures) and probe["tables"] == tables, probe

    # The page itself (no script), as a screenshot: the first figure is drawn where the layout put it.
    shot = tmp_path / "shot.png"
    chromium(tuned_analysis.html, tmp_path, f"--screenshot={shot}")
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=float) / 255
    assert pixels.shape[:2] == (WINDOW[1], WINDOW[0])
    assert (pixels.min(axis=2) < 0.9).mean() > 0.02, "the page is (nearly) blank"
    assert ((pixels.max(axis=2) - pixels.min(axis=2)) > 0.25).sum() > 300, "no coloured pixels: no figure drawn"
    left, top, width, height = (round(v) for v in probe["first"])
    assert top + height <= WINDOW[1], "the first figure should be in the first screenful"
    shown = pixels[top:top + height, left:left + width]
    source = Image.open(tuned_analysis.figures["test_accuracy"][0]).convert("RGB").resize((width, height), Image.LANCZOS)
    source = np.asarray(source, dtype=float) / 255
    # what the browser drew there is the figure's PNG (scaled): strongly correlated, not just any pixels. Both are
    # compared at a quarter of the size (box-averaged), so that a line drawn a pixel aside by the browser's
    # resampling does not count as a different picture.
    def coarse(rgb):
        grey = Image.fromarray((rgb.mean(axis=2) * 255).astype("uint8"))
        return np.asarray(grey.resize((max(1, width // 4), max(1, height // 4)), Image.BOX), dtype=float).ravel()

    assert np.corrcoef(coarse(shown), coarse(source))[0, 1] > 0.9
