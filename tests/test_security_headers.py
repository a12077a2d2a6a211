"""Security headers on every response of a real `flashwire serve` (issue 10, finding 8): every route of
the app walked from its own route table, and the pages under their CSP in chromium, with the widget on
partner pages that isolate themselves (COEP) or check its integrity (SRI)."""

from __future__ import annotations

import base64
import functools
import hashlib
import itertools
import re
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import ConsoleMessage, Page, expect
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from flashwire.core.settings import Settings
from tests.browser import browser
from tests.conftest import ROOT, ServiceNode, Stack, auth, post_line

WEB_DIR = ROOT / "web"
PARTNER = "https://partner.example"
# What each page may be framed by (CSP frame-ancestors); any other HTML answer: 'none'.
PAGE_FRAMING = {"/": "'self'", "/live": "'self'", "/desk": "'none'"}
FRAME_OPTIONS = {"'none'": "DENY", "'self'": "SAMEORIGIN"}


def _starlette(app: Any) -> Starlette:
    """The Starlette router under the ASGI layer create_app wraps it in (the /ws dispatch)."""
    while not isinstance(app, Starlette):
        app = app.app
    return app


def _routes() -> list[BaseRoute]:
    from flashwire.service.app import create_app

    return list(_starlette(create_app(Settings())).routes)


def _fill(template: str, samples: dict[str, list[str]]) -> list[str]:
    """Every concrete path of a route template, one per combination of the sample values."""
    names = re.findall(r"{(\w+)(?::\w+)?}", template)
    missing = [name for name in names if name not in samples]
    assert not missing, f"{template}: no sample value for {missing}; add one to this test"
    paths = []
    for values in itertools.product(*(samples[name] for name in names)):
        path = template
        for name, value in zip(names, values, strict=True):
            path = re.sub(r"{" + name + r"(?::\w+)?}", value, path)
        paths.append(path)
    return paths


def _requests(routes: list[BaseRoute], samples: dict[str, list[str]]) -> Iterator[tuple[str, str]]:
    """(method, path) of every route and method of the app, and every file of a static mount."""
    for route in routes:
        if isinstance(route, Route):
            for path in _fill(route.path, samples):
                for method in sorted(route.methods or ()):
                    yield method, path
        elif isinstance(route, Mount) and isinstance(route.app, StaticFiles):
            for file in sorted(WEB_DIR.rglob("*")):
                if file.is_file() and "__pycache__" not in file.parts:
                    yield "GET", f"{route.path}/{file.relative_to(WEB_DIR).as_posix()}"
        else:
            raise AssertionError(f"{route!r}: teach this test how to request this kind of route")


class _InlineCode(HTMLParser):
    """Inline script, inline style and event-handler attributes, which the pages' CSP forbids."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if (tag == "script" and "src" not in names) or tag == "style":
            self.found.append(f"<{tag}> element")
        self.found.extend(f"{name}= on <{tag}>" for name in names if name == "style" or name.startswith("on"))


def _directives(policy: str) -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for part in policy.split(";"):
        name, *values = part.split()
        directives[name] = values
    return directives


def check_headers(method: str, path: str, response: httpx.Response, body: bytes) -> str:
    """Assert the headers a response of this kind must carry; return its media type."""
    headers = response.headers
    media_type = str(headers.get("content-type", "")).split(";")[0].strip()
    where = f"{method} {path} -> {response.status_code} {media_type}"
    assert headers.get("x-content-type-options") == "nosniff", where
    if media_type == "text/html":
        csp = _directives(headers.get("content-security-policy", ""))
        framing = PAGE_FRAMING.get(path, "'none'")
        assert csp.get("script-src") == ["'self'"], (where, csp)
        assert csp.get("style-src") == ["'self'"], (where, csp)
        assert csp.get("default-src") == ["'self'"] and csp.get("object-src") == ["'none'"], (where, csp)
        assert csp.get("base-uri") == ["'none'"], (where, csp)
        assert csp.get("frame-ancestors") == [framing], (where, csp)
        assert headers.get("x-frame-options") == FRAME_OPTIONS[framing], where
        assert headers.get("referrer-policy") in ("no-referrer", "strict-origin-when-cross-origin"), where
        if path == "/desk":
            assert headers["referrer-policy"] == "no-referrer", where
            assert headers.get("cache-control") == "no-store", where
            assert csp.get("form-action") == ["'none'"], where
        if body:
            parser = _InlineCode()
            parser.feed(body.decode())
            assert parser.found == [], (where, parser.found)
    if path in ("/web/ticker.js", "/web/alerts.js"):
        assert headers.get("cross-origin-resource-policy") == "cross-origin", where
        assert headers.get("access-control-allow-origin") == "*", where
    return media_type


async def _fetch(
    client: httpx.AsyncClient, method: str, path: str, **kwargs: Any
) -> tuple[httpx.Response, bytes]:
    """One request; an event stream is closed once its headers are in."""
    async with client.stream(method, path, **kwargs) as response:
        streaming = response.headers.get("content-type", "").startswith("text/event-stream")
        body = b"" if streaming or method == "HEAD" else await response.aread()
        return response, body


async def test_every_route_and_response_type_carries_its_security_headers(stack: Stack) -> None:
    """Walk every route of the app (from its route table, so a new route cannot be missed) with every
    method it serves, and every file under web/: each answer has nosniff, each HTML page its CSP
    (scripts and styles from its own origin, no inline code in the page), matching framing rules and
    a Referrer-Policy, the widget script its cross-origin headers; the feeds and /sse stay readable
    cross-origin; unknown paths and methods, HEAD and 304 answers carry nosniff too."""
    node = stack.service()
    admin = await stack.token("admin", ["*"], name="Ada")
    spare = await stack.token("editor", ["en"], name="Spare")
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as client:
        line = await post_line(client, admin, "Parliament dissolved ahead of early elections")
        samples = {
            "line_id": [line["id"]],
            "token_id": [spare.split("_")[1]],
            "edition": ["en"],
            "format": ["json", "rss", "atom"],
            # An unknown registration: its routes answer 404 (a wrong secret looks the same).
            "registration_id": ["0123456789abcdef"],
            "endpoint_id": ["ep_0123456789abcdef"],
        }
        requests = list(_requests(_routes(), samples))
        requests += [("GET", "/no/such/page"), ("GET", "/api/v1/no-such"), ("DELETE", "/desk"), ("POST", "/")]
        media_types: set[str] = set()
        statuses: set[int] = set()
        for method, path in requests:
            kwargs: dict[str, Any] = {"headers": auth(admin)}
            if method == "POST":
                kwargs["json"] = {}
            response, body = await _fetch(client, method, path, **kwargs)
            media_types.add(check_headers(method, path, response, body))
            statuses.add(response.status_code)
            # It carried a token: nothing of the answer may be kept by a browser or a proxy.
            assert response.headers.get("cache-control") == "no-store", (method, path, response.status_code)
        # The walk met every kind of answer the service gives.
        assert {
            "text/html",
            "application/json",
            "application/feed+json",
            "application/rss+xml",
            "application/atom+xml",
            "text/event-stream",
            "text/plain",
            "text/javascript",
            "text/css",
        } <= media_types, media_types
        assert {200, 404, 405, 422} <= statuses, statuses

        # Cross-origin readers: the feeds and /sse keep their CORS headers (docs/widget.md).
        for path in ("/feeds/en.json", "/feeds/en.atom", "/sse?editions=en"):
            response, body = await _fetch(client, "GET", path, headers={"Origin": PARTNER})
            check_headers("GET", path, response, body)
            assert response.headers["access-control-allow-origin"] == PARTNER, path
        # A conditional feed request: 304, nosniff still.
        feed = await client.get("/feeds/en.json")
        again = await client.get("/feeds/en.json", headers={"If-None-Match": feed.headers["etag"]})
        assert again.status_code == 304
        check_headers("GET", "/feeds/en.json", again, b"")

        # Without a token, public answers keep their own caching; with one, no-store, whatever the
        # route set. The answer that holds a new token's secret, and 401s, are no-store too.
        assert feed.headers["cache-control"].startswith("public"), feed.headers
        assert "cache-control" not in (await client.get("/api/v1/config")).headers
        with_token = await client.get("/feeds/en.json", headers=auth(admin))
        assert with_token.headers["cache-control"] == "no-store"
        created = await client.post(
            "/api/v1/tokens",
            json={"name": "Night desk", "role": "editor", "editions": ["en"]},
            headers=auth(admin),
        )
        assert created.status_code == 201 and created.json()["token"], created.text
        assert created.headers["cache-control"] == "no-store"
        for headers in ({"Authorization": "Bearer fwt_0_wrong"}, {"Authorization": "Basic eDp5"}):
            refused = await client.get("/api/v1/me", headers=headers)
            assert refused.status_code == 401 and refused.headers["cache-control"] == "no-store"


async def test_the_static_mount_serves_web_assets_and_nothing_else(stack: Stack, tmp_path: Path) -> None:
    """/web/ serves the pages' assets, by an allow-list of extensions (scripts, styles, images, fonts,
    the web app manifest): web/__init__.py (it makes web/ part of the package) is 404 from a real
    node, as text/plain with nosniff, and so, from WebAssets over a folder of every kind of file,
    is anything else (Python, dotfiles, text, data, archives, no extension), in any letter case."""
    node = stack.service()
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as client:
        # web/client/: only the client module, never its tests or dev dependencies.
        hidden = [
            "/web/client/test/helpers.mjs",
            "/web/client/node_modules/ws/index.js",
            "/web/client/x/../test/unit.test.mjs",
        ]
        for path in ("/web/__init__.py", "/web/desk/index.html", *hidden):
            response = await client.get(path)
            assert response.status_code == 404 and response.text == "Not Found", (path, response.text)
            assert response.headers["x-content-type-options"] == "nosniff"
        for path in ("/web/ticker.js", "/web/desk/desk.js", "/web/desk/desk.css", "/web/index.js"):
            assert (await client.get(path)).status_code == 200, path
        module = await client.get("/web/client/flashwire.js")
        assert module.status_code == 200 and "javascript" in module.headers["content-type"]
        assert module.headers["access-control-allow-origin"] == "*", module.headers

    from flashwire.service.app import WebAssets

    assets = ["a.js", "m.mjs", "s.css", "i.png", "i.jpg", "i.jpeg", "i.gif", "i.webp", "i.avif", "i.svg"]
    assets += ["f.ico", "f.woff", "f.woff2", "app.webmanifest", "p.html", "UPPER.PNG", "sub/deep.js"]
    others = ["__init__.py", "x.pyc", ".env", ".htaccess", "notes.txt", "data.json", "dump.rdb", "keys.pem"]
    others += ["archive.tar.gz", "Makefile", "x.js.bak", "x.js~", "sub/x.py", "x.PY", "x.map", "x.js.map"]
    for name in assets + others:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("content")
    app = Starlette(routes=[Mount("/web", WebAssets(directory=tmp_path))])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        for name in assets:
            assert (await client.get(f"/web/{name}")).status_code == 200, name
        for name in others:
            assert (await client.get(f"/web/{name}")).status_code == 404, name


# -- in chromium ---------------------------------------------------------------------------------

# Records every CSP violation a page reports (the securitypolicyviolation event), from its first script on.
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__violations.push(`${e.violatedDirective} blocked ${e.blockedURI} in ${e.documentURI}`);
});
"""


class IsolatedPartner:
    """A partner site on its own origin whose pages send a strict CSP (the one docs/widget.md asks
    partners for) and Cross-Origin-Embedder-Policy: require-corp, so a cross-origin script loads only
    if its server allows it (Cross-Origin-Resource-Policy, or CORS when loaded with `crossorigin`)."""

    def __init__(self, root: Path, node: ServiceNode) -> None:
        self.root = root
        policy = (
            f"default-src 'self'; script-src 'self' {node.url}; style-src 'self'; "
            f"connect-src 'self' {node.url} ws://127.0.0.1:{node.port}"
        )
        handler = functools.partial(_PartnerHandler, policy, directory=str(root))
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def page(self, name: str, script_tag: str) -> str:
        (self.root / name).write_text(
            '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Partner</title>'
            f'{script_tag}</head><body><h1>Partner news site</h1><flash-ticker edition="en"></flash-ticker>'
            "</body></html>"
        )
        return f"{self.origin}/{name}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _PartnerHandler(SimpleHTTPRequestHandler):
    def __init__(self, policy: str, *args: Any, **kwargs: Any) -> None:
        self.policy = policy
        super().__init__(*args, **kwargs)

    def end_headers(self) -> None:
        self.send_header("Content-Security-Policy", self.policy)
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def _watch(page: Page, problems: list[str]) -> None:
    """Collect what would show a page broken by its policy: CSP or COEP refusals in the console,
    uncaught errors."""

    def console(message: ConsoleMessage) -> None:
        text = message.text
        if "Content Security Policy" in text or "Refused to" in text or "ERR_BLOCKED" in text:
            problems.append(f"{page.url}: console: {text}")

    page.on("console", console)
    page.on("pageerror", lambda error: problems.append(f"{page.url}: error: {error}"))
    page.on(
        "requestfailed",
        lambda request: (
            problems.append(f"{request.url}: failed: {request.failure}")
            if "BLOCKED" in (request.failure or "")
            else None
        ),
    )


@pytest.mark.slow
async def test_pages_and_the_widget_work_under_their_policies_with_no_violation(
    stack: Stack, tmp_path: Path
) -> None:
    """In chromium, with every page's CSP in force: the demo page's three widgets, the live list and
    the desk (sign in, post, see it in the desk's reader view) work and report no CSP violation; the
    widget embedded on a partner page that isolates itself (COEP require-corp, a strict CSP) shows the
    line, loaded plainly (thanks to Cross-Origin-Resource-Policy) and with Subresource Integrity
    (thanks to Access-Control-Allow-Origin)."""
    stack.worker()
    node = stack.service()
    chief = await stack.token("chief", ["en", "ar", "es"], name="Chiara")
    (tmp_path / "partner").mkdir()
    partner = IsolatedPartner(tmp_path / "partner", node)
    ticker_js = (WEB_DIR / "ticker.js").read_bytes()
    integrity = "sha384-" + base64.b64encode(hashlib.sha384(ticker_js).digest()).decode()
    plain = partner.page("plain.html", f'<script src="{node.url}/web/ticker.js" defer></script>')
    sri = partner.page(
        "sri.html",
        f'<script src="{node.url}/web/ticker.js" integrity="{integrity}" crossorigin="anonymous" defer>'
        "</script>",
    )
    problems: list[str] = []
    text = "Storm warning lifted for the coast"
    try:
        async with browser() as chromium:
            context = await chromium.new_context()
            await context.add_init_script(RECORD_VIOLATIONS)
            context.set_default_timeout(10_000)
            pages: dict[str, Page] = {}
            for name, url in (
                ("demo", node.url + "/"),
                ("live", node.url + "/live?editions=en"),
                ("desk", node.url + "/desk"),
                ("plain", plain),
                ("sri", sri),
            ):
                page = pages[name] = await context.new_page()
                _watch(page, problems)
                await page.goto(url)
            # The demo page is one edition's news page (tests/test_demo_page.py walks the others).
            for edition in ("en",):
                widget = pages["demo"].locator(f"#ticker-{edition}")
                await expect(widget).to_have_attribute("data-transport", "ws")
            await expect(pages["demo"].locator("#snippet")).to_contain_text(f"{node.url}/web/ticker.js")
            await expect(pages["live"].locator("#status")).to_have_text("live")
            for name in ("plain", "sri"):
                await expect(pages[name].locator("flash-ticker")).to_have_attribute("data-transport", "ws")
            desk = pages["desk"]
            await desk.get_by_label("Editor token").fill(chief)
            await desk.get_by_role("button", name="Sign in").click()
            await expect(desk.locator("#reader-status")).to_have_text("live")
            await desk.get_by_label("Headline").fill(text)
            await desk.get_by_role("button", name="Post line").click()
            await expect(desk.locator("#notice")).to_have_text("Posted.")
            await expect(desk.locator("#reader-view .fw-line")).to_contain_text(text)
            await expect(pages["live"].locator("#lines .fw-line")).to_contain_text(text)
            await expect(pages["demo"].locator("#ticker-en .line .text")).to_have_text([text])
            for name in ("plain", "sri"):
                await expect(pages[name].locator("flash-ticker .line .text")).to_have_text([text])
            for name, page in pages.items():
                problems.extend(f"{name}: {v}" for v in await page.evaluate("window.__violations"))
    finally:
        partner.close()
    assert problems == []
