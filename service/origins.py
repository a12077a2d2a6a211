"""Embedding rules: which web origins may open the ticker (WebSocket, SSE) and read the feeds.

Browsers send `Origin` on WebSocket upgrades and cross-origin requests; apps and
servers usually send none and are not restricted here (they are not embeddings).
The service's own pages are always allowed.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import HTTPConnection


class OriginPolicy:
    """The configured list of allowed origins; `*` allows any."""

    def __init__(self, allowed: tuple[str, ...]) -> None:
        self.any = "*" in allowed
        self.allowed = frozenset(origin.rstrip("/").lower() for origin in allowed if origin != "*")

    def allows(self, connection: HTTPConnection) -> bool:
        """May this request's origin use the reader endpoints?"""
        origin = connection.headers.get("origin")
        if origin is None:
            return True
        origin = origin.rstrip("/").lower()
        if self.any or origin in self.allowed:
            return True
        host = connection.headers.get("host", "").lower()
        return origin != "null" and urlsplit(origin).netloc == host

    def cors_headers(self, connection: HTTPConnection) -> dict[str, str]:
        """CORS response headers for an allowed cross-origin request (none otherwise)."""
        origin = connection.headers.get("origin")
        if origin is None or not self.allows(connection):
            return {}
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Expose-Headers": "ETag, Last-Modified, Retry-After",
            "Vary": "Origin",
        }
