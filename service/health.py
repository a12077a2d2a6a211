"""Health, readiness and metrics: liveness that tells the truth about publishing.

A node can be perfectly healthy itself while nothing is being published: the
API accepts lines into the desk stream, but only a worker moves them to the
tickers. So /healthz also looks at the workers' heartbeats and at the oldest
desk entry no worker has applied yet, and says "degraded" when either shows
publishing has stalled; the desk page polls it to warn editors.

/readyz answers a narrower question for orchestrators: can this node serve
readers? Publishing problems deliberately do not make a node unready: they are
shared by every node alike, so taking nodes out of rotation would only cut
readers off from the lines they already have, and send them nowhere better.

Every value is read with one pipeline of cheap commands (plus one XRANGE when
publishing is behind), and every time is Redis's own clock: heartbeats are
scored with TIME, and desk entry ids carry the Redis time they were added at,
so the hosts' clocks never need to agree.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from flashwire.core.cursors import cursor_key
from flashwire.core.keys import Keys
from flashwire.core.models import Health, Readiness
from flashwire.service.http import model_response
from flashwire.service.hub import Hub
from flashwire.service.metrics import CONTENT_TYPE, NodeMetrics

log = logging.getLogger(__name__)

# A worker beats every second; five missed beats means it is gone (or cut off from Redis).
WORKER_STALE_MS = 5_000
# Applying an entry takes milliseconds; one waiting this long means publishing is stuck.
DESK_LAG_LIMIT_S = 5.0
# Heartbeats are trimmed after a day; only the newest are needed to count the live ones.
HEARTBEATS_READ = 100
# Probes and the desk's banner must see the state now, never a cached answer.
NO_STORE = {"Cache-Control": "no-store"}


@dataclass
class Publishing:
    """What Redis says about publishing right now."""

    workers_alive: int
    desk_lag_s: float
    problems: list[str] = field(default_factory=list)

    @property
    def status(self) -> Literal["ok", "degraded"]:
        """'ok', or 'degraded' when publishing has stalled."""
        return "degraded" if self.problems else "ok"


def _decode(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def read_publishing(redis: Redis, keys: Keys) -> Publishing:
    """Count the live workers and measure the age of the oldest unapplied desk entry."""
    # TIME outside the pipeline: a Cluster client refuses a keyless command in one (redis-py 5).
    seconds, micros = await redis.time()
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zrevrangebyscore(keys.workers, "+inf", "-inf", start=0, num=HEARTBEATS_READ, withscores=True)
        pipe.get(keys.desk_applied)
        pipe.xrevrange(keys.desk, count=1)
        beats, applied_raw, newest = await pipe.execute()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    alive = sum(1 for _, score in beats if now_ms - score <= WORKER_STALE_MS)
    applied = "" if applied_raw is None else _decode(applied_raw)
    oldest_ms: int | None = None
    # Desk entry ids are stream ids, read by the one cursor rule; their ms part is Redis's time.
    if newest and (not applied or cursor_key(_decode(newest[0][0])) > cursor_key(applied)):
        # Behind: the first entry after the applied cursor is the one that has waited longest.
        first = await redis.xrange(keys.desk, min=f"({applied}" if applied else "-", count=1)
        if first:
            oldest_ms = cursor_key(_decode(first[0][0]))[0]
    lag_s = 0.0 if oldest_ms is None else max(0.0, (now_ms - oldest_ms) / 1000)
    publishing = Publishing(workers_alive=alive, desk_lag_s=round(lag_s, 3))
    if alive == 0:
        publishing.problems.append(
            "no worker is running (none has reported in the last 5 s): lines are accepted but not published"
        )
    if lag_s > DESK_LAG_LIMIT_S:
        publishing.problems.append(
            f"publishing is behind: the oldest unapplied desk entry has waited {lag_s:.0f} s"
        )
    return publishing


def _node(request: Request) -> str:
    return str(request.app.state.settings.node_name)


async def healthz(request: Request) -> Response:
    """Liveness, and whether publishing works: 503 without Redis, else 200 'ok' or 'degraded'."""
    redis: Redis | None = getattr(request.app.state, "redis", None)
    keys: Keys = request.app.state.keys
    try:
        if redis is None:
            raise ConnectionError("the node has not connected to Redis yet")
        publishing = await read_publishing(redis, keys)
    except (RedisError, OSError) as exc:
        problem = f"this node cannot reach Redis ({type(exc).__name__}: {exc})"
        unavailable = Health(status="unavailable", node=_node(request), redis=str(exc), problems=[problem])
        return model_response(unavailable, status_code=503, headers=NO_STORE)
    health = Health(
        status=publishing.status,
        node=_node(request),
        workers_alive=publishing.workers_alive,
        desk_lag_s=publishing.desk_lag_s,
        problems=publishing.problems,
    )
    return model_response(health, headers=NO_STORE)


async def readyz(request: Request) -> Response:
    """Readiness for orchestrators: 200 when this node can serve readers, else 503."""
    problems: list[str] = []
    redis: Redis | None = getattr(request.app.state, "redis", None)
    hub: Hub | None = getattr(request.app.state, "hub", None)
    try:
        if redis is None:
            raise ConnectionError("the node has not connected to Redis yet")
        await redis.ping()
    except (RedisError, OSError) as exc:
        problems.append(f"this node cannot reach Redis ({type(exc).__name__}: {exc})")
    if hub is None or not hub.ready:
        problems.append("this node is not reading the tickers yet")
    readiness = Readiness(status="unready" if problems else "ready", node=_node(request), problems=problems)
    return model_response(readiness, status_code=503 if problems else 200, headers=NO_STORE)


async def metrics(request: Request) -> Response:
    """Prometheus text metrics of this node, and of publishing as Redis shows it (service/metrics.py)."""
    node_metrics: NodeMetrics = request.app.state.metrics
    publishing: Publishing | None
    try:
        publishing = await read_publishing(request.app.state.redis, request.app.state.keys)
    except (RedisError, OSError) as exc:
        log.warning("metrics: cannot read publishing state from Redis: %s", exc)
        publishing = None
    return Response(node_metrics.render(publishing), media_type=CONTENT_TYPE)


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
