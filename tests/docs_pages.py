"""What the API documentation pages (/docs, /redoc) load, for the tests that prove they work
offline: every asset comes from the app itself, none from another host."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import PurePosixPath

DOCS_PAGES = ("/docs", "/redoc")

#: The content type each kind of asset must be served with, by file extension.
ASSET_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png"}

_ABSOLUTE_URL = re.compile(r"(?:https?:)?//[\w.-]+", re.IGNORECASE)


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls.extend(value for name, value in attrs if name in ("src", "href") and value)


def page_assets(html: str) -> list[str]:
    """Every ``src`` and ``href`` on the page; fails if any URL on it names another host."""
    assert _ABSOLUTE_URL.findall(html) == [], "the page names another host"
    parser = _Assets()
    parser.feed(html)
    assert parser.urls, "the page loads nothing: the parser or the page changed"
    for url in parser.urls:
        assert url.startswith("/"), url  # "//host/..." is refused above
    return parser.urls


def expected_type(url: str) -> str:
    """The content type (or the part of it) the asset at ``url`` must be served with."""
    suffix = PurePosixPath(url).suffix
    assert suffix in ASSET_TYPES, f"an asset of an unexpected kind: {url}"
    return ASSET_TYPES[suffix]
