"""<report-dir>/<gpu>/report.html: the folder's markdown pages in one self-contained file.

Every page present (the suites' matrices first, then compatibility, trends, then any other .md) is converted
with Python-Markdown (tables, toc); every local image it references is inlined as a data: URI, links between
the pages become links inside the file, and the CSS is inline: the file loads nothing at view time (no
network, no other file). Raw HTML in the markdown is shown as text, never interpreted (log tails in the
details can hold `<...>`). An image that is missing, or not local, is a visible note in the page.
"""

from __future__ import annotations

import base64
import datetime
import html
import mimetypes
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit
from xml.etree.ElementTree import Element

if TYPE_CHECKING:
    from markdown import Markdown

SUITES = ("composability", "conformance", "regression", "smoke")
PAGES: tuple[str, ...] = (*(f"{s}.md" for s in SUITES), "compatibility.md", "compatibility-all.md", "trends.md")
REPORT = "report.html"

CSS = """
:root { color-scheme: light; --line: #d0d7de; --head: #f3f5f7; --muted: #57606a; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", "Liberation Sans", sans-serif; color: #1f2328;
       margin: 0 auto; padding: 1em 2em 4em; max-width: 110em; }
h1 { border-bottom: 2px solid var(--line); padding-bottom: .2em; }
section.page { border-top: 4px solid #0969da; margin-top: 3em; }
section.page > h1:first-of-type { border-bottom: none; }
.source { color: var(--muted); font-size: .85em; margin: .4em 0 0; }
nav.toc { background: var(--head); border: 1px solid var(--line); border-radius: 6px; padding: .5em 1.5em; }
nav.toc ul { margin: .2em 0; }
code { font: .88em/1.4 ui-monospace, "Liberation Mono", monospace; background: #eff1f3; padding: .1em .3em;
       border-radius: 4px; }
td code, th code { white-space: nowrap; }
li, p { overflow-wrap: anywhere; }
.table-wrap { overflow: auto; max-height: 85vh; width: fit-content; max-width: 100%; margin: 1em 0;
              border: 1px solid var(--line); border-radius: 6px; }
table { border-collapse: separate; border-spacing: 0; font-size: .9em; }
th, td { border-bottom: 1px solid var(--line); border-right: 1px solid var(--line); padding: .3em .6em;
         vertical-align: top; text-align: left; min-width: 4em; max-width: 40em; overflow-wrap: anywhere; }
thead th { position: sticky; top: 0; background: var(--head); z-index: 1; }
tbody tr:nth-child(even) td { background: #fafbfc; }
img { max-width: 100%; height: auto; display: block; margin: 1em 0; border: 1px solid var(--line); }
.missing { display: block; color: #82071e; background: #ffebe9; border: 1px solid #ff8182;
           border-radius: 6px; padding: .5em 1em; margin: 1em 0; }
@media print { .table-wrap { max-height: none; overflow: visible; } thead th { position: static; } }
"""


def page_files(folder: Path, pages: Sequence[str] = PAGES) -> list[Path]:
    """The folder's .md files: those named in `pages` in that order, then the others by name."""
    present = {p.name: p for p in folder.glob("*.md") if p.is_file()}
    first = [present.pop(name) for name in pages if name in present]
    return first + sorted(present.values(), key=lambda p: p.stem)


def write_html(folder: Path, title: str, pages: Sequence[str] = PAGES) -> Path:
    """Writes <folder>/report.html from the markdown pages in `folder` (order: `page_files`) and returns
    its path. Images are read relative to each page; a missing one is a note in the page, not an error."""
    files = page_files(folder, pages)
    stems = {f.name: f.stem for f in files}
    toc: list[str] = []
    sections: list[str] = []
    for f in files:
        body, tokens = _convert(f, stems)
        heads = [t for t in tokens if t["level"] == 1] or [{"name": f.stem, "children": tokens}]
        label = _text(heads[0]["name"])
        subs = [c for t in heads for c in t["children"] if c["level"] == 2]
        toc.append(f'<li><a href="#page-{stems[f.name]}">{label}</a>'
                   + ("<ul>" + "".join(f'<li><a href="#{html.escape(c["id"])}">{_text(c["name"])}</a></li>'
                                       for c in subs) + "</ul>" if subs else "") + "</li>")
        sections.append(f'<section class="page" id="page-{stems[f.name]}">\n'
                        f'<p class="source">{html.escape(f.name)}</p>\n{body}\n</section>')
    written = f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC"
    contents = (f'<nav class="toc"><strong>Contents</strong><ul>{"".join(toc)}</ul></nav>' if toc
                else '<p class="missing">No markdown pages in this folder.</p>')
    doc = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
           f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
           f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
           f"<h1>{html.escape(title)}</h1>\n"
           f'<p class="source">{len(files)} page(s) from {html.escape(str(folder))}; written {written}; '
           f"self-contained (images inline, nothing loaded from elsewhere).</p>\n"
           f"{contents}\n" + "\n".join(sections) + "\n</body>\n</html>\n")
    out = folder / REPORT
    out.write_text(doc, encoding="utf-8")
    return out


def _text(name: str) -> str:
    """A toc entry's name as HTML text (some versions of the toc extension escape it, some do not)."""
    return html.escape(html.unescape(name))


def _convert(page: Path, stems: dict[str, str]) -> tuple[str, list[dict[str, Any]]]:
    """One page as an HTML fragment, and its headings (the toc extension's tokens)."""
    import markdown
    from markdown.extensions.toc import slugify
    from markdown.treeprocessors import Treeprocessor

    stem = stems[page.name]

    class Inline(Treeprocessor):
        """Images as data: URIs, tables in a scrolling box, links to sibling pages inside the file."""

        def run(self, root: Element) -> None:
            for img in list(root.iter("img")):
                _inline_image(img, page.parent)
            for a in root.iter("a"):
                href = a.get("href", "")
                target = href.split("#", 1)[0]
                if target in stems and "/" not in target:
                    a.set("href", f"#page-{stems[target]}")
            for el in root.iter():
                if el.tag in ("td", "th"):  # GFM: `a\|b` in a table cell is a|b, in code too
                    for code in el.iter("code"):
                        if code.text:
                            code.text = type(code.text)(code.text.replace("\\|", "|"))
            for i, el in enumerate(list(root)):
                if el.tag == "table":
                    wrap = Element("div", {"class": "table-wrap"})
                    root.remove(el)
                    wrap.append(el)
                    root.insert(i, wrap)

    md: Markdown = markdown.Markdown(extensions=["tables", "toc"], extension_configs={"toc": {
        "toc_depth": "1-2", "slugify": lambda value, sep: f"{stem}-{slugify(value, sep)}"}})
    md.preprocessors.deregister("html_block")  # raw HTML is text here
    md.inlinePatterns.deregister("html")
    md.treeprocessors.register(Inline(md), "infer-inline", 15)  # after inline (20): images exist
    body = md.convert(page.read_text(encoding="utf-8", errors="replace"))
    tokens: list[dict[str, Any]] = getattr(md, "toc_tokens", [])
    return body, tokens


def _inline_image(img: Element, base: Path) -> None:
    """`img` with its file as a data: URI; a missing, remote or unreadable one becomes a note in its place."""
    src = img.get("src", "")
    if src.startswith("data:"):
        return
    parts = urlsplit(src)
    problem = ""
    if parts.scheme or parts.netloc:
        problem = f"image not inlined (not a local file): {src}"
    else:
        path = base / unquote(parts.path)
        mime = mimetypes.guess_type(path.name)[0] or ""
        if not path.is_file():
            problem = f"image not found: {src}"
        elif not mime.startswith("image/"):
            problem = f"not an image: {src}"
        else:
            try:
                data = base64.b64encode(path.read_bytes()).decode("ascii")
            except OSError as e:
                problem = f"image not readable: {src} ({e.strerror})"
            else:
                img.set("src", f"data:{mime};base64,{data}")
                img.set("data-file", src)
                return
    alt = img.get("alt", "")
    img.attrib.clear()
    img.tag = "span"
    img.set("class", "missing")
    img.text = "⚠ " + problem + (f" ({alt})" if alt and alt not in src else "")

