"""The application factory: the one place that wires settings, Redis, the hub and the routes."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Match, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from flashwire.core.key_layout import refuse_old_layout
from flashwire.core.keys import Keys
from flashwire.core.push_registry import PushRegistry
from flashwire.core.redis_cluster import prepare
from flashwire.core.redis_connect import RedisConnector
from flashwire.core.settings import Settings
from flashwire.service import account, api, audit, feeds, health, push_api, sse, webhooks
from flashwire.service.desk import Desk
from flashwire.service.errors import ApiError
from flashwire.service.hub import Hub
from flashwire.service.metrics import NodeMetrics
from flashwire.service.origins import OriginPolicy
from flashwire.service.rate_limits import RateLimits
from flashwire.service.reach import OnlineReaders, ReachRecorder
from flashwire.service.security_headers import EVERY_RESPONSE, SecurityHeaders
from flashwire.service.tokens import TokenStore
from flashwire.service.ws import ReaderSocketDispatch

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent.parent / "web"


async def index(request: Request) -> Response:
    """The demo page: the three editions' widgets side by side."""
    return FileResponse(WEB_DIR / "index.html")


async def service_worker(request: Request) -> Response:
    """The service worker of the site's alerts (web/flashwire-sw.js), at the root so its scope is
    the whole site (W3C Service Workers, "scope": a worker's scope is at most its script's
    directory unless `Service-Worker-Allowed` widens it). `no-cache`: a browser checks for a new
    version on every registration and navigation instead of keeping an old worker for a day."""
    return FileResponse(
        WEB_DIR / "flashwire-sw.js",
        media_type="text/javascript; charset=utf-8",
        headers={"Cache-Control": "no-cache", "Service-Worker-Allowed": "/"},
    )


async def live_list(request: Request) -> Response:
    """The plain live list of lines (web/reader.js)."""
    return FileResponse(WEB_DIR / "live.html")


# What /web/ serves, by extension (any letter case): the pages' scripts, styles, images, fonts and
# web app manifest. Any other file there (web/__init__.py, which makes web/ part of the package, or
# one left there by an editor or a build) is a 404, never served as whatever type it guesses.
WEB_ASSET_SUFFIXES = frozenset(
    {".html", ".js", ".mjs", ".css", ".png", ".jpg", ".jpeg", ".gif", ".webp", ".avif", ".svg", ".ico"}
    | {".woff", ".woff2", ".webmanifest"}
)


# Of web/client/ (the JavaScript client, docs/client.md) only the module itself is served: its tests
# and its dev dependencies (web/client/node_modules, after `npm ci`) are not assets.
WEB_CLIENT_ASSETS = frozenset({"client/flashwire.js"})


class WebAssets(StaticFiles):
    """The web assets under web/ (WEB_ASSET_SUFFIXES, 404 for any other file), except the desk page
    itself: it is served only at /desk, with its headers (service/security_headers.py; a copy
    without them could be framed or cached), and anything of web/client/ but the client module."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        if PurePosixPath(path).suffix.lower() not in WEB_ASSET_SUFFIXES:
            return PlainTextResponse("Not Found", status_code=404)
        if path.startswith("client/") and path not in WEB_CLIENT_ASSETS:
            return PlainTextResponse("Not Found", status_code=404)
        if path.startswith("desk") and path.endswith(".html"):
            return PlainTextResponse("Not Found", status_code=404)
        return await super().get_response(path, scope)


async def desk(request: Request) -> Response:
    """The newsroom desk page (its strict headers: service/security_headers.py)."""
    return FileResponse(WEB_DIR / "desk" / "index.html")


def _readable_by_embedders(request: Request, response: Response) -> Response:
    """Errors of the reader endpoints (/sse, the feeds) carry the CORS headers of an allowed origin,
    so that a widget on a partner page can read why it was refused (and stop, or wait)."""
    path = request.url.path
    if path == "/sse" or path.startswith(("/feeds/", "/api/v1/push")):
        origins: OriginPolicy = request.app.state.origins
        response.headers.update(origins.cors_headers(request))
    return response


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return _readable_by_embedders(request, exc.response())


async def _redis_unavailable(request: Request, exc: Exception) -> Response:
    log.warning("Redis unavailable during %s %s: %s", request.method, request.url.path, exc)
    message = "the store is unavailable; retry shortly (with the same Idempotency-Key)"
    error = ApiError(503, "unavailable", message)
    response = error.response()
    response.headers["Retry-After"] = "1"
    return _readable_by_embedders(request, response)


async def _client_gone(request: Request, exc: Exception) -> Response:
    """The client went away in the middle of its request body: nothing to answer, nothing to log
    as an error (a dropped phone connection is not a server fault)."""
    log.info("client left during %s %s", request.method, request.url.path)
    return Response(status_code=400)


async def _server_error(request: Request, exc: Exception) -> Response:
    """Starlette's bare 500 (it logs the traceback), sent from outside the middleware layers, so
    with the headers every response carries (service/security_headers.py)."""
    return PlainTextResponse("Internal Server Error", status_code=500, headers=EVERY_RESPONSE)


async def _not_found(request: Request, exc: Exception) -> Response:
    if request.url.path.startswith("/api/"):
        return ApiError(404, "not_found", f"no route {request.url.path}").response()
    return PlainTextResponse("Not Found", status_code=404)


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    """405 with the `Allow` header RFC 9110 §15.5.6 requires, listing the methods of every route
    of the path (Starlette's own header names only the first route that matched it)."""
    allowed: set[str] = set()
    for route in request.app.routes:
        # The scope at the top of the app: inside a Mount, request.scope has the mount's root_path.
        match, _ = route.matches({"type": "http", "path": request.url.path, "root_path": "", "method": "GET"})
        if match == Match.NONE:
            continue
        if isinstance(route, Route) and route.methods:
            allowed |= route.methods
        elif isinstance(route, Mount) and isinstance(route.app, StaticFiles):
            allowed |= {"GET", "HEAD"}
    headers = {"Allow": ", ".join(sorted(allowed))} if allowed else None
    return ApiError(
        405, "method_not_allowed", f"{request.method} is not allowed here", headers=headers
    ).response()


def create_app(settings: Settings | None = None) -> ReaderSocketDispatch:
    """Build the Starlette app (Redis connections open in its lifespan), fronted by the /ws dispatch.
    The reader endpoints log one line per connection themselves (service/connection_log.py)."""
    settings = settings or Settings.from_env()
    keys = Keys(settings.key_prefix)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Timeouts and keepalive, so a half-open connection (a partition, a failover) is noticed
        # instead of blocking forever; through the sentinels, or a Cluster client, when configured
        # (core/redis_connect.py).
        connector = RedisConnector(settings)
        redis = connector.primary(Redis)
        # The hub's blocking XREAD (at most READ_BLOCK_MS, 1 s: service/hub.py) gets a client of its own,
        # a replica's with FLASHWIRE_REDIS_READ_FROM_REPLICAS; then the snapshots and replays read the
        # same replica (one client), so a reader never mixes two servers' views of a ticker.
        reader_redis = connector.reader(Redis, socket_timeout_s=15)
        # Redis Cluster: learn the slot map before scripts run concurrently (flashwire/core/redis_cluster.py).
        with contextlib.suppress(RedisConnectionError, RedisTimeoutError):
            await prepare(redis)
            await prepare(reader_redis)
        # Cluster key layout: refuse to start beside data in the old layout (a Redis that is down
        # now is waited out by the hub, and checked at the next start).
        with contextlib.suppress(RedisConnectionError, RedisTimeoutError):
            await refuse_old_layout(redis, keys)
        history_redis = reader_redis if settings.redis_read_from_replicas else redis
        primary = redis if settings.redis_read_from_replicas else None
        hub = Hub(history_redis, reader_redis, keys, settings, primary=primary)
        app.state.settings = settings
        app.state.keys = keys
        app.state.redis = redis
        app.state.hub = hub
        app.state.desk = Desk(
            redis,
            keys,
            maxlen=settings.desk_retention,
            idempotency_ttl_s=settings.idempotency_ttl_s,
            wait_replicas=settings.wait_replicas,
            wait_timeout_ms=settings.wait_timeout_ms,
        )
        # Desk writes ride a failover out only with Sentinel (service/write_retry.py): a lone server
        # that fails is a 503 at once.
        app.state.failover_retry_s = settings.redis_failover_retry_s if connector.uses_sentinel else 0.0
        app.state.tokens = TokenStore(redis, keys)
        app.state.push_registry = PushRegistry(redis, keys)
        # Rate limits counted in Redis, so every node shares them (service/rate_limits.py).
        app.state.rate_limits = RateLimits(redis, keys, settings)
        app.state.origins = OriginPolicy(settings.allowed_origins)
        # -- partner webhooks (service/webhooks.py) --
        app.state.webhook_rate_limit = webhooks.rate_limit(settings)
        # A registry per app: several apps in one process (tests) never share metrics.
        app.state.metrics = NodeMetrics(hub, app.state.edge_counts)  # counted at the edge: service/ws.py
        app.state.reach = ReachRecorder(redis, keys, settings.node_name, latency=app.state.metrics.latency)
        hub.reach = app.state.reach
        # This node's readers per edition, published for GET /api/v1/editions/{edition}/readers.
        online = OnlineReaders(redis, keys, settings.node_name, hub)
        await hub.start()
        app.state.reach.start()
        online.start()
        log.info("flashwire node %s ready", settings.node_name)
        try:
            yield
        finally:
            await online.stop()
            await app.state.reach.stop()
            await hub.stop()
            await connector.aclose()

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/live", live_list, methods=["GET"]),
        Route("/flashwire-sw.js", service_worker, methods=["GET"]),
        Route("/desk", desk, methods=["GET"]),
        *health.routes,
        *api.routes,
        *audit.routes,
        *account.routes,
        *push_api.routes,
        *sse.routes,
        *feeds.routes,
        *webhooks.routes,
        Mount("/web", WebAssets(directory=WEB_DIR), name="web"),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        # Inside Starlette's error layer, whose 500 answer (_server_error) adds them itself.
        # SseAhead serves GET /sse ahead of the router, inside the headers (service/sse.py).
        middleware=[Middleware(SecurityHeaders), Middleware(sse.SseAhead)],
        exception_handlers={
            ApiError: _api_error,
            RedisConnectionError: _redis_unavailable,
            RedisTimeoutError: _redis_unavailable,
            ClientDisconnect: _client_gone,
            404: _not_found,
            405: _method_not_allowed,
            500: _server_error,
        },
    )
    # /ws is served by the dispatch layer in front of the router (see ReaderSocketDispatch).
    return ReaderSocketDispatch(app)
