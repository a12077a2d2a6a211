"""A partner's site for the browser tests: static pages on an origin of their own (a loopback port),
where the widget is embedded as a partner would embed it. The `partner` fixture (tests/conftest.py)
gives each test one."""

from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.conftest import ServiceNode


class PartnerSite:
    """A static site on its own origin, where partners embed the widget."""

    def __init__(self, root: Path) -> None:
        self.root = root
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def page(
        self, name: str, body: str, node: ServiceNode, css: str = "", head: str = "", lang: str = "en"
    ) -> str:
        """Write a page that loads ticker.js from `node` (`head`: more of the head, such as a
        Content-Security-Policy meta element; `lang`: the page's language, and its direction)."""
        direction = "rtl" if lang in ("ar", "he", "fa", "ur") else "ltr"
        html = (
            f'<!doctype html><html lang="{lang}" dir="{direction}"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Partner</title><style>{css}</style>{head}"
            f'<script src="{node.url}/web/ticker.js" defer></script></head>'
            f"<body><h1>Partner news site</h1>{body}</body></html>"
        )
        (self.root / name).write_text(html)
        return f"{self.origin}/{name}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass
