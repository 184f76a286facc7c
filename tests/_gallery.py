"""Reading a contact sheet's gallery page (``index.html``) in the tests: its links and its sheet data."""

from __future__ import annotations

import json
import posixpath
import re
from html.parser import HTMLParser
from typing import Any
from urllib.parse import unquote


class Page(HTMLParser):
    """The links (every href and src), <script> count, job names (<strong>) and <dd> values of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.scripts = 0
        self.strong: list[str] = []
        self.values: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        for key in ("href", "src"):
            if found.get(key):
                self.links.append(found[key] or "")
        self.scripts += tag == "script"
        self._in = tag if tag in ("strong", "dd") else None
        if tag in ("strong", "dd"):
            (self.strong if tag == "strong" else self.values).append("")

    def handle_endtag(self, tag: str) -> None:
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "strong":
            self.strong[-1] += data
        elif self._in == "dd":
            self.values[-1] += data


def parse(page: str | bytes) -> Page:
    parsed = Page()
    parsed.feed(page.decode("utf-8") if isinstance(page, bytes) else page)
    return parsed


def resolved_links(page: str | bytes, folder: str) -> list[str]:
    """The paths (or keys) the links of the page in ``folder`` point at, resolved as a browser does."""
    return [posixpath.normpath(posixpath.join(folder, unquote(link))) for link in parse(page).links]


def sheet_data(page: str | bytes) -> dict[str, Any]:
    """The sheet's data, as the page embeds it for scripts (``<script id="sheet-data">``)."""
    text = page.decode("utf-8") if isinstance(page, bytes) else page
    found = re.search(r'<script type="application/json" id="sheet-data">(.*?)</script>', text, re.S)
    assert found, text[:2000]
    data: dict[str, Any] = json.loads(found.group(1))
    return data
