"""The ``index.html`` gallery of a batch file's contact sheet folder: one static page, nothing external.

Each job gets a card: its first image (an animation's poster links to the animation; a video is a
``<video>`` element over a tile with its name), its other outputs as links, its params and a link to its
sidecar. Links are relative (``../<job>/<file>``, each part percent-encoded) so the page works from a
share over ``file://`` or any web server; every name and value is HTML-escaped. A Content-Security-Policy
allows only the page's own inline style and script and files beside it. The sheet's layout (cells and
labels, with their boxes) is embedded as JSON in ``<script id="sheet-data">``. The one script marks
each image ``data-loaded="yes"`` or ``"no"`` once the page has loaded (``<body data-state="ready">``).
"""

from __future__ import annotations

import base64
import hashlib
import json
from html import escape
from typing import Any
from urllib.parse import quote

from hotfolder.default_plugins.sheet_layout import Entry, Plan

SCRIPT = """addEventListener("load", function () {
  var images = document.images, loaded = 0;
  for (var i = 0; i < images.length; i++) {
    var ok = images[i].complete && images[i].naturalWidth > 0;
    images[i].setAttribute("data-loaded", ok ? "yes" : "no");
    if (ok) { loaded++; }
  }
  document.body.setAttribute("data-images", String(images.length));
  document.body.setAttribute("data-images-loaded", String(loaded));
  document.body.setAttribute("data-state", "ready");
});"""

STYLE = """body{font:14px/1.4 system-ui,sans-serif;margin:1em;background:#fafafa;color:#111}
h1{font-size:1.2em;word-break:break-all}
.sheet img{max-width:100%;border:1px solid #ccc}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#fff;border:1px solid #ddd;padding:8px;width:272px;overflow-wrap:anywhere}
.card img,.card video{width:256px;height:256px;object-fit:contain;background:#eee;display:block}
.tile{width:256px;height:256px;background:#ddd;display:flex;align-items:center;justify-content:center;
text-align:center;word-break:break-all}
dl{margin:.4em 0;display:grid;grid-template-columns:auto 1fr;gap:0 .6em}dt{font-weight:600}dd{margin:0}
.missing{color:#a00}"""


def href(*parts: str) -> str:
    """A relative link from the sheet folder: each part percent-encoded (``/``, ``?``, ``#`` too)."""
    return "/".join(quote(part, safe="") if part != ".." else ".." for part in parts)


def _json_block(data: Any) -> str:
    text = json.dumps(data, ensure_ascii=False, indent=1)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _card(entry: Entry) -> str:
    job = entry.name
    parts = [f'<figure class="card" id="{escape(quote(job, safe=""))}">']
    picture = entry.picture
    if picture is None:
        parts.append('<div class="tile missing">no image</div>')
    elif picture[1] == "video":
        link = href("..", job, picture[0])
        parts.append(f'<video controls preload="none" src="{escape(link)}"></video>'
                     f'<div class="tile">▶ {escape(picture[0])}</div>')
    else:
        link = href("..", job, picture[0])
        shown = href("posters", entry.poster) if entry.poster else link
        parts.append(f'<a href="{escape(link)}"><img src="{escape(shown)}" alt="{escape(job)}" '
                     f'loading="eager"></a>')
    parts.append(f"<figcaption><strong>{escape(job)}</strong> · "
                 f'<a href="{escape(href("..", job, job + ".json"))}">sidecar</a></figcaption>')
    others = [name for name, _ in entry.outputs if picture is None or name != picture[0]]
    if others:
        parts.append("<div>" + " · ".join(f'<a href="{escape(href("..", job, n))}">{escape(n)}</a>'
                                          for n in others) + "</div>")
    rows = []
    for section in ("matrix", "params", "set"):
        values = entry.sidecar.get(section)
        if isinstance(values, dict):
            for key, value in values.items():
                rows.append(f"<dt>{escape(str(key))}</dt><dd>{escape(_value(value))}</dd>")
    if rows:
        parts.append("<dl>" + "".join(rows) + "</dl>")
    parts.append("</figure>")
    return "".join(parts)


def page(file: str, entries: list[Entry], plan: Plan, geometry: dict[str, Any] | None, sheet: str | None) -> str:
    """The gallery page of batch ``file``."""
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    policy = (f"default-src 'none'; img-src 'self' file:; media-src 'self' file:; style-src 'unsafe-inline'; "
              f"script-src 'sha256-{digest}'")
    data = {"file": file, "layout": plan.layout, "rows": plan.rows, "columns": plan.columns,
            "row_axis": plan.row_axis, "column_axes": plan.column_axes, "row_labels": plan.row_labels,
            "column_labels": plan.column_labels,
            "jobs": [{"job": e.name, "sidecar": href("..", e.name, e.name + ".json"),
                      "cell": list(plan.cells[i]), "labels": e.labels} for i, e in enumerate(entries)],
            "sheet": geometry}
    sheet_html = (f'<p class="sheet"><a href="{escape(href(sheet))}"><img src="{escape(href(sheet))}" '
                  f'alt="contact sheet"></a></p>') if sheet else ""
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{escape(policy)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(file)}</title><style>{STYLE}</style></head>\n<body>"
        f"<h1>{escape(file)} · {len(entries)} jobs</h1>{sheet_html}"
        f'<div class="cards">{"".join(_card(e) for e in entries)}</div>\n'
        f'<script type="application/json" id="sheet-data">{_json_block(data)}</script>\n'
        f"<script>{SCRIPT}</script></body></html>\n"
    )
