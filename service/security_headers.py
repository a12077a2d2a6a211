"""Security headers on every HTTP response of the application, added in one place.

`SecurityHeaders` is a pure ASGI layer: it changes nothing but the headers of
`http.response.start`, whatever route, exception handler or static file answered.

- **Every response** gets `X-Content-Type-Options: nosniff`: no browser reads a JSON body, a
  feed, an SSE stream or a text error as HTML or script (Fetch standard, "X-Content-Type-Options
  header"; OWASP HTTP Headers Cheat Sheet).
- **HTML pages** (a `text/html` answer) get the policy of their path from `PAGES`: a
  Content-Security-Policy with scripts, styles and connections from the page's own origin only
  (no inline script or style: the pages keep theirs in files under web/), `frame-ancestors`
  with the matching `X-Frame-Options` (RFC 7034), a `Referrer-Policy` and
  `Cross-Origin-Opener-Policy: same-origin`. The desk handles tokens: no framing at all,
  `no-referrer`, no form submission anywhere (its sign-in is never submitted natively:
  docs/desk.md) and `Cache-Control: no-store`. The public pages (`/`, `/live`) may be framed by
  the service's own origin only: partners embed the widget by script tag (docs/widget.md), not
  a frame. An HTML answer at any other path (a page added later, the static copies under
  /web/) gets `OTHER_PAGE`, the strictest policy, until it is given its own entry.
- **The widget script** (`/web/ticker.js`, and `/web/alerts.js` that it loads for its alerts
  control) is loaded by partner pages from another origin:
  `Cross-Origin-Resource-Policy: cross-origin`, so a page that isolates itself
  (`Cross-Origin-Embedder-Policy: require-corp`) may still load it, and
  `Access-Control-Allow-Origin: *`, so it may be loaded with `crossorigin` (for Subresource
  Integrity). It is public code; who may *use* the ticker is decided on /ws, /sse and the
  feeds (service/origins.py). So is the JavaScript client (`/web/client/flashwire.js`), an ES
  module that another origin's page can `import` only with CORS.

- **An answer to a request that carried credentials** (a non-blank `Authorization` header,
  whatever its scheme or validity) gets `Cache-Control: no-store`, replacing any other value: it
  may hold a token's secret (POST /api/v1/tokens), the trail, the lines of an edition or who the
  token is, and no browser cache or proxy may keep it (RFC 9111 §5.2.2.5; OWASP REST Security
  Cheat Sheet, "Security headers"). Set here, for every route at once, so that no route can
  forget it; answers without credentials (the feeds, /api/v1/config) keep their own caching.

Otherwise a header the response already has is kept: a route that needs another value sets it
itself. The feeds' and /sse's CORS headers (service/origins.py) are left as they are.

Only HTTP passes through here: `/ws` is served ahead of the router (service/ws.py
ReaderSocketDispatch) and other WebSocket scopes are handed on untouched. On a stream (/sse)
this layer costs one call per chunk sent and keeps no coroutine frame of its own alive while
the stream lasts (`__call__` returns the inner application's awaitable instead of awaiting it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

Headers = tuple[tuple[bytes, bytes], ...]


def content_security_policy(*, frame_ancestors: str, form_action: str) -> str:
    """A page's CSP (CSP Level 3): everything from the page's own origin only ('self' covers
    ws:/wss: of the same host for connect-src), no plugins, no <base>, the given framing and
    form targets."""
    return "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            f"form-action {form_action}",
            f"frame-ancestors {frame_ancestors}",
        )
    )


@dataclass(frozen=True)
class PagePolicy:
    """The headers of one kind of HTML page."""

    frame_ancestors: str  # CSP frame-ancestors: "'none'" or "'self'"
    form_action: str  # CSP form-action
    referrer_policy: str
    no_store: bool = False

    def headers(self) -> dict[str, str]:
        """The header names and values, X-Frame-Options following frame-ancestors."""
        frame_options = {"'none'": "DENY", "'self'": "SAMEORIGIN"}[self.frame_ancestors]
        headers = {
            "Content-Security-Policy": content_security_policy(
                frame_ancestors=self.frame_ancestors, form_action=self.form_action
            ),
            "X-Frame-Options": frame_options,
            "Referrer-Policy": self.referrer_policy,
            "Cross-Origin-Opener-Policy": "same-origin",
        }
        if self.no_store:
            headers["Cache-Control"] = "no-store"
        return headers


PUBLIC_PAGE = PagePolicy("'self'", "'none'", "strict-origin-when-cross-origin")
DESK_PAGE = PagePolicy("'none'", "'none'", "no-referrer", no_store=True)
OTHER_PAGE = PagePolicy("'none'", "'none'", "no-referrer")

# Path -> policy of the HTML page served there.
PAGES: Mapping[str, PagePolicy] = {"/": PUBLIC_PAGE, "/live": PUBLIC_PAGE, "/desk": DESK_PAGE}

EVERY_RESPONSE = {"X-Content-Type-Options": "nosniff"}
# Path -> headers of a file that other origins load.
CROSS_ORIGIN_FILES: Mapping[str, Mapping[str, str]] = {
    "/web/ticker.js": {"Cross-Origin-Resource-Policy": "cross-origin", "Access-Control-Allow-Origin": "*"},
    # The "Get breaking alerts" control, loaded by the widget on partner pages (docs/widget.md).
    "/web/alerts.js": {"Cross-Origin-Resource-Policy": "cross-origin", "Access-Control-Allow-Origin": "*"},
    # The JavaScript client (docs/client.md): a module script, which another origin's page can
    # import only with CORS.
    "/web/client/flashwire.js": {
        "Cross-Origin-Resource-Policy": "cross-origin",
        "Access-Control-Allow-Origin": "*",
    },
}


def _raw(headers: Mapping[str, str]) -> Headers:
    return tuple((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items())


_EVERY = _raw(EVERY_RESPONSE)
_PAGES = {path: _raw(policy.headers()) for path, policy in PAGES.items()}
_OTHER_PAGE = _raw(OTHER_PAGE.headers())
_FILES = {path: _raw(headers) for path, headers in CROSS_ORIGIN_FILES.items()}
_HTML_TYPES = (b"text/html", b"application/xhtml+xml")


def headers_for(path: str, content_type: bytes) -> Headers:
    """The security headers of a response at `path` with this Content-Type value."""
    extra = _EVERY
    if content_type.lower().startswith(_HTML_TYPES):
        extra += _PAGES.get(path, _OTHER_PAGE)
    return extra + _FILES.get(path, ())


_NO_STORE = (b"cache-control", b"no-store")


def carries_credentials(scope: Scope) -> bool:
    """Did the request send a non-blank `Authorization` header?"""
    return any(name.lower() == b"authorization" and value.strip() for name, value in scope["headers"])


def _with_headers(message: Message, path: str, credentials: bool) -> None:
    raw = list(message.get("headers", ()))
    if credentials:
        raw = [header for header in raw if header[0].lower() != b"cache-control"]
        raw.append(_NO_STORE)
    present = {name.lower() for name, _ in raw}
    content_type = next((value for name, value in raw if name.lower() == b"content-type"), b"")
    raw.extend(header for header in headers_for(path, content_type) if header[0] not in present)
    message["headers"] = raw


class SecurityHeaders:
    """ASGI middleware: adds the security headers above to every HTTP response (and no-store to
    every answer to a request with credentials)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not `async def`: the inner application's awaitable is returned, so no frame of this layer
        # stays suspended for the hours a stream (/sse) may last; only `send_with_headers` remains.
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        path: str = scope["path"]
        credentials = carries_credentials(scope)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                _with_headers(message, path, credentials)
            await send(message)

        return self.app(scope, receive, send_with_headers)
