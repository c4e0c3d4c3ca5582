"""report.html: the whole report in one self-contained file that opens offline and can be mailed.

It renders the same Markdown lines as report.md (markdown-it, raw HTML off; spec text is escaped where it enters
the Markdown, markdown_text), opening with report.md's lead, embeds every figure as a data-URI PNG, and adds the
run's metadata, the methods paragraph (citations shown as author and year) and its references. It links to nothing outside itself: links and images of the Markdown become plain text, and the
only links left point at its own headings.
"""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from markdown_it import MarkdownIt
from markdown_it.token import Token

from ..load import Run
from .methods import Methods
from .lead import TITLE
from .references import cited_as_text, plain, short
from ..runinfo import RunFacts, analysis_versions_text, duration, versions_text
from ..markdown_text import code, text

STYLE = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:#1b1b1b;
 background:#fff;margin:0}
main{max-width:64rem;margin:0 auto;padding:1.5rem 2rem 4rem}
h1{font-size:1.7rem;margin:.2rem 0 1rem}h2{font-size:1.3rem;margin-top:2.2rem;border-bottom:1px solid #ccc}
h3{font-size:1.1rem;margin-top:1.6rem}
code{font:13px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#f3f3f3;padding:0 .2em}
pre{background:#f6f6f6;border:1px solid #ddd;padding:.8rem;overflow:auto;font-size:13px}
pre code{background:none;padding:0}
table{border-collapse:collapse;margin:1rem 0;font-size:13.5px;display:block;overflow-x:auto}
th,td{border:1px solid #ccc;padding:.25rem .5rem;vertical-align:top}th{background:#eee}
tbody tr:nth-child(even){background:#fafafa}
figure{margin:1.5rem 0;page-break-inside:avoid}figure img{max-width:100%;height:auto;border:1px solid #ddd}
figcaption{font-size:13.5px;color:#333;margin-top:.4rem}
nav{font-size:13.5px;background:#f6f6f6;border:1px solid #ddd;padding:.5rem 1rem;margin:1rem 0}
nav a{color:#1b1b1b;margin-right:1rem}
.meta th{text-align:left;white-space:nowrap}.refs li{margin-bottom:.4rem}.methods{text-align:justify}
"""


def _slug(text: str, used: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
    slug, i = base, 2
    while slug in used:
        slug, i = f"{base}-{i}", i + 1
    used.add(slug)
    return slug


def markdown_html(text: str, used: set[str] | None = None) -> tuple[str, list[tuple[int, str, str]]]:
    """Markdown to HTML with no raw HTML, no links and no images (their text stays); headings get ids.
    Returns the HTML and the headings (level, id, their Markdown)."""
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = md.parse(text)
    used = set() if used is None else used
    headings = []
    for i, tok in enumerate(tokens):
        if tok.type == "inline" and tok.children:
            kept = []
            for child in tok.children:
                if child.type in ("link_open", "link_close"):
                    continue
                if child.type == "image":
                    kept.append(Token("text", "", 0, content=child.content))
                    continue
                kept.append(child)
            tok.children = kept
        if tok.type == "heading_open" and i + 1 < len(tokens):
            raw = tokens[i + 1].content
            tok.attrSet("id", _slug(raw.replace("`", ""), used))
            headings.append((int(tok.tag[1]), str(tok.attrGet("id")), raw))
    return md.renderer.render(tokens, md.options, {}), headings


def _inline(text: str) -> str:
    """One paragraph of Markdown as HTML without the <p> wrapper."""
    out, _ = markdown_html(text)
    return re.sub(r"^<p>|</p>\s*$", "", out.strip())


def figure_html(name: str, png: Path, caption: str) -> str:
    data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
    return (f'<figure id="figure-{html.escape(name)}"><img src="data:image/png;base64,{data}" '
            f'alt="{html.escape(name)}"><figcaption><b>{html.escape(name)}</b>: {_inline(text(caption))}</figcaption></figure>')


def _row(key: str, value: str) -> str:
    return f"<tr><th>{html.escape(key)}</th><td>{value}</td></tr>"


def metadata_html(run: Run, f: RunFacts) -> str:
    m, hw, res = f.manifest, f.manifest.get("hardware") or {}, f.manifest.get("resources") or {}
    esc = html.escape
    machine = "; ".join(x for x in (
        hw.get("cpu") or "", f"{hw['logical_cpus']} logical CPUs" if hw.get("logical_cpus") else "",
        f"{hw['memory_gib']:g} GiB" if hw.get("memory_gib") else "", ", ".join(hw.get("gpus") or [])) if x)
    sessions = f"launch {m.get('started_at', 'n/a')}" + "".join(f"; resumed {r.get('started_at', r['file'])}"
                                                               for r in run.resumes)
    rows = [
        _row("study", f"<code>{esc(run.study.name)}</code>, budget {esc(str(run.study.budget))}"),
        _row("run", f"<code>{esc(str(run.run_dir))}</code>, id {esc(str(m.get('run_id', 'n/a')))}"),
        _row("command", f"<code>{esc(' '.join(map(str, m.get('command') or [])) or 'n/a')}</code>"),
        _row("dataset", esc(run.dataset)),
        _row("sessions", esc(sessions)),
        _row("wall time", esc(f"{duration(f.wall_seconds)} from launch to the last trial; {duration(f.trial_seconds)} "
                              f"of trial time summed over {f.trials} trials")),
        _row("devices", esc(", ".join(f"{d}: {k} trials" for d, k in f.devices.items()) or "not recorded")),
        _row("machine", esc(f"host {m.get('host', 'n/a')}; {machine or 'hardware not recorded'}; "
                            f"{m.get('platform', '')}".rstrip("; "))),
        _row("resources", esc(", ".join(f"{k} {v}" for k, v in res.items() if v is not None) or "n/a")),
        _row("sampler", esc(str(m.get("sampler", run.study.sampler_text())))),
        _row("git commit", f"<code>{esc(str(m.get('git_commit', 'unknown')))}</code>"),
        _row("versions at launch", esc(versions_text(f) + (f"; ablate {f.packages['ablate']}"
                                                           if f.packages.get("ablate") else ""))),
        _row("versions of this analysis", esc(analysis_versions_text(f))),
    ]
    return '<table class="meta"><tbody>' + "".join(rows) + "</tbody></table>"


def _reference(key: str) -> str:
    return f"<li>{html.escape(short(key))} (<code>{html.escape(key)}</code>): {html.escape(plain(key))}</li>"


def split_lead(body_md: list[str]) -> tuple[list[str], list[str]]:
    """(the lines of report.md's '## At a glance' section without its heading, every other line)."""
    heading = f"## {TITLE}"
    if heading not in body_md:
        return [], list(body_md)
    start = body_md.index(heading)
    end = next((i for i in range(start + 1, len(body_md)) if body_md[i].startswith("## ")), len(body_md))
    return body_md[start + 1:end], body_md[:start] + body_md[end:]


def report_html(run: Run, body_md: list[str], figs: dict[str, list[Path]], captions: dict[str, str],
                skipped: dict[str, str], methods: Methods, f: RunFacts) -> str:
    """The whole page (a string); figures are read from their PNG files. It opens with report.md's lead
    ('## At a glance') above the first figure, then the run's metadata and report.md's other sections."""
    used: set[str] = {"glance", "run", "figures", "methods", "spec"}
    lead_md, rest_md = split_lead(body_md)
    body, headings = markdown_html("\n".join(rest_md), used)
    title = headings[0][2] if headings else f"Study {code(run.study.name)}: analysis"
    names = list(figs)
    lead = names[:1]  # the first figure (test accuracy per arm) leads the page; the rest follow the text
    figures = [figure_html(name, figs[name][0], captions.get(name, name)) for name in names[1:]]
    # report.md's own lead, rendered: both files open with the same sentences
    glance = ([markdown_html("\n".join(lead_md), set())[0]] if lead_md else []) + [
        figure_html(name, figs[name][0], captions.get(name, name)) for name in lead]
    if skipped:
        figures.append("<p>Not drawn:</p><ul>" + "".join(f"<li>{html.escape(n)}: {html.escape(w)}</li>"
                                                         for n, w in skipped.items()) + "</ul>")
    toc = [(2, "glance", "At a glance"), (2, "run", "Run")] + [h for h in headings if h[0] == 2] + [(2, "figures", "Figures"),
                                                                       (2, "methods", "Methods"), (2, "spec", "Spec")]
    nav = "<nav>" + "".join(f'<a href="#{i}">{html.escape(t.replace("`", ""))}</a>' for _, i, t in toc) + "</nav>"
    # The page's h1 comes first: the body's own h1 (the report title) is moved above the metadata.
    body = re.sub(r"^<h1[^>]*>.*?</h1>\s*", "", body, count=1, flags=re.S)
    refs = "".join(_reference(k) for k in methods.keys)
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title.replace('`', ''))}</title>", f"<style>{STYLE}</style>", "</head>", "<body>",
        "<main>", f"<h1>{_inline(title)}</h1>", nav, '<h2 id="glance">At a glance</h2>', *glance,
        '<h2 id="run">Run</h2>', metadata_html(run, f), body,
        '<h2 id="figures">Figures</h2>',
        *(figures or ['<p>The one figure of this run is at the top (<a href="#glance">At a glance</a>).</p>' if names
                      else "<p>No figure was drawn.</p>"]),
        '<h2 id="methods">Methods</h2>', f'<p class="methods">{_inline(cited_as_text(methods.text))}</p>',
        "<p>References (keys as in <code>references.bib</code>):</p>", f'<ol class="refs">{refs}</ol>',
        '<h2 id="spec">Spec</h2>', "<p>The resolved spec of the run (<code>spec.yaml</code>):</p>",
        f"<pre><code>{html.escape(f.spec_text)}</code></pre>",
        "</main>", "</body>", "</html>", ""])
