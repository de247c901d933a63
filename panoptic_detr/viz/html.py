"""The `index.html` page of an explain folder: the figures with their captions.

Self-contained: inline CSS, no script, no remote resource; images referenced by relative
paths, so the folder can be moved, zipped or opened offline.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Sequence

from panoptic_detr.utils.io import write_text

STYLE = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 0 auto;
       max-width: 1400px; padding: 1.5em 2em; color: #1d1d1d; line-height: 1.45; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; margin-top: 2.2em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
figure { margin: 0.6em 0 0 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #e2e2e2; }
figcaption { color: #444; max-width: 70em; margin-top: 0.4em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.95em; }
td, th { border: 1px solid #ddd; padding: 0.25em 0.7em; text-align: left; }
th { background: #f4f4f4; }
nav a { margin-right: 1em; }
.lead { font-size: 1.1em; font-weight: 600; }
.meta td:first-child { font-weight: 600; }
"""


# the objects table's words for a kept query's state (engine.explain_states)
_STATE_TEXT = {
    "kept": "in the panoptic map",
    "duplicate": "dropped by --dedup (duplicate of a better query)",
    "small": "no segment (too small, or lost every pixel in the argmax)",
}


def _rel(path: str | os.PathLike, root: Path) -> str:
    p = Path(path)
    if p.is_absolute():
        p = Path(os.path.relpath(p, root))
    return p.as_posix()


def render_index(title: str, figures: Sequence[tuple[str, str, str]], meta: dict | None = None,
                 objects: Sequence[dict] | None = None, root: Path | None = None,
                 links: Sequence[tuple[str, str]] = ()) -> str:
    """The page's HTML. `figures`: (image path relative to the page, heading, caption);
    `objects`: the kept queries (query, label, score, box and optionally state); `links`:
    (relative href, text) shown under the title."""
    root = root or Path(".")
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{e(title)}</h1>",
    ]
    for href, text in links:
        parts.append(f'<p class="lead"><a href="{e(href, quote=True)}">{e(text)}</a></p>')
    if meta:
        rows = "".join(f"<tr><td>{e(str(k))}</td><td>{e(str(v))}</td></tr>" for k, v in meta.items() if v not in (None, ""))
        parts.append(f'<table class="meta">{rows}</table>')
    if objects:
        states = any("state" in o for o in objects)
        head = ("<tr><th>query</th><th>label</th><th>score</th><th>box (x0, y0, x1, y1), clipped to the image</th>"
                + ("<th>state</th>" if states else "") + "</tr>")
        rows = "".join(
            f"<tr><td>{int(o['query'])}</td><td>{e(str(o['label']))}</td><td>{float(o['score']):.3f}</td>"
            f"<td>{', '.join(f'{float(v):.0f}' for v in o['box'])}</td>"
            + (f"<td>{e(_STATE_TEXT.get(o.get('state', 'kept'), str(o.get('state'))))}</td>" if states else "")
            + "</tr>"
            for o in objects
        )
        parts.append(f"<h2>Queries above the threshold</h2><table>{head}{rows}</table>")
    if len(figures) > 1:
        links = "".join(f'<a href="#fig{i}">{e(h)}</a>' for i, (_, h, _) in enumerate(figures, 1))
        parts.append(f"<nav>{links}</nav>")
    for i, (src, heading, caption) in enumerate(figures, 1):
        parts.append(
            f'<h2 id="fig{i}">{e(heading)}</h2><figure><a href="{e(_rel(src, root), quote=True)}">'
            f'<img src="{e(_rel(src, root), quote=True)}" alt="{e(heading, quote=True)}"></a>'
            f"<figcaption>{e(caption)}</figcaption></figure>"
        )
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_index(path: str | os.PathLike, title: str, figures: Sequence[tuple[str, str, str]],
                meta: dict | None = None, objects: Sequence[dict] | None = None,
                links: Sequence[tuple[str, str]] = ()) -> Path:
    """Write `render_index(...)` to `path` atomically (image paths relative to its folder)."""
    path = Path(path)
    write_text(path, render_index(title, figures, meta, objects, root=path.parent, links=links))
    return path


def referenced_images(page: str) -> list[str]:
    """The `src` of every <img> of a page (used by the tests to check that they exist)."""
    from html.parser import HTMLParser

    found: list[str] = []

    class _P(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag == "img":
                found.extend(v for k, v in attrs if k == "src" and v)

    _P().feed(page)
    return found
