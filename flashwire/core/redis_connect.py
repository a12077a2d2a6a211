"""The one place that opens Redis clients: from REDIS_URL, or through Redis Sentinel.

Every process (service, worker, CLI, dev stack) makes one `RedisConnector` from
its settings and asks it for the clients it needs; closing the connector closes
them all, and the sentinels' own connections.

Every option that changed default between redis-py majors is set here, so a
client behaves the same on redis-py 5 and 8 (../shared/PITFALLS.md 0.2):
RESP2, a socket timeout (a half-open connection after a partition or a failover
is noticed instead of awaited forever: PITFALLS 3.2), a connect timeout, TCP
keepalive, a health check of an idle connection, and no automatic retry of a
command (a retried XADD or script could apply twice: PITFALLS 3.3; the callers
that retry do it themselves, for idempotent writes only).

With FLASHWIRE_REDIS_SENTINELS and FLASHWIRE_REDIS_SENTINEL_MASTER set, clients
come from `redis.asyncio.sentinel.Sentinel(...).master_for(...)`: each new
connection asks the sentinels where the primary is, and a connection to a demoted
primary is dropped on its first READONLY reply (redis-py turns it into a
ConnectionError: PITFALLS 3.1), so the next one reaches the new primary. The
db number, username and password of REDIS_URL apply to the data nodes (its host
and port are not used: the sentinels name the primary). arq's pool is built the
same way with `redis_class=ArqRedis` and handed to arq, never through arq's own
Sentinel settings, which drop timeouts and sentinel auth (PITFALLS 3.13).

With FLASHWIRE_REDIS_CLUSTER on, `primary(Redis)` is a Cluster client (REDIS_URL names one seed
node; flashwire/core/redis_cluster.py says why the code written for `Redis` runs on it), and arq's
pool is never one: arq cannot run on a Cluster (PITFALLS 3.15), so it gets the Redis of
FLASHWIRE_ARQ_REDIS_URL, which the settings require then.
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

from arq.connections import ArqRedis
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from flashwire.core.settings import Settings

R = TypeVar("R", bound=Redis)

# Seconds. A command (not a blocking read) answers in well under a second; 10 s means "gone".
COMMAND_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 2.0
# Seconds an idle pooled connection may sit before it is PINGed on next use.
HEALTH_CHECK_INTERVAL_S = 5
# Seconds for a sentinel's answer (SENTINEL MASTERS): they answer at once or are down.
SENTINEL_TIMEOUT_S = 1.0


class RedisConnector:
    """Opens the process's Redis clients, all configured alike; `aclose()` closes them all."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._clients: list[Redis] = []
        self._sentinel: Sentinel | None = None
        if settings.redis_sentinels:
            url = parse_url(settings.redis_url) if settings.redis_url.startswith("redis") else {}
            auth = {k: url[k] for k in ("db", "username", "password") if url.get(k) is not None}
            sentinel_options: dict[str, Any] = {
                "socket_timeout": SENTINEL_TIMEOUT_S,
                "socket_connect_timeout": SENTINEL_TIMEOUT_S,
                "protocol": 2,
            }
            if settings.redis_sentinel_password:
                sentinel_options["password"] = settings.redis_sentinel_password
            self._sentinel = Sentinel(
                list(settings.redis_sentinels), sentinel_kwargs=sentinel_options, **auth
            )

    @property
    def uses_sentinel(self) -> bool:
        """Whether clients follow the primary through the sentinels."""
        return self._sentinel is not None

    def primary(self, cls: type[R], *, socket_timeout_s: float = COMMAND_TIMEOUT_S) -> R:
        """A client of the primary, of class `cls` (Redis, or arq's ArqRedis). `socket_timeout_s` must
        exceed any blocking read's block time on this client (PITFALLS 3.8)."""
        client: R
        if self._settings.redis_cluster and not issubclass(cls, ArqRedis):
            options = self._options(socket_timeout_s)
            # The Cluster client retries MOVED/ASK redirections itself; its `retry` is for those.
            options.pop("retry")
            client = cast(R, RedisCluster.from_url(self._settings.redis_url, **options))
        elif self._sentinel is not None:
            client = self._sentinel.master_for(
                self._settings.redis_sentinel_master,
                redis_class=cls,
                check_connection=True,
                **self._options(socket_timeout_s),
            )
        else:
            client = cls.from_url(self._settings.redis_url, **self._options(socket_timeout_s))
        self._clients.append(client)
        return client

    def arq(self, *, socket_timeout_s: float = COMMAND_TIMEOUT_S) -> ArqRedis:
        """arq's pool: the Redis of FLASHWIRE_ARQ_REDIS_URL when set (never a Cluster), else the
        primary's, through the sentinels when configured. It holds arq's queues and job keys only."""
        if not self._settings.arq_redis_url:
            return self.primary(ArqRedis, socket_timeout_s=socket_timeout_s)
        pool = ArqRedis.from_url(self._settings.arq_redis_url, **self._options(socket_timeout_s))
        assert isinstance(pool, ArqRedis)
        self._clients.append(pool)
        return pool

    def reader(self, cls: type[R], *, socket_timeout_s: float = COMMAND_TIMEOUT_S) -> R:
        """A client for reads that may come from a replica: with FLASHWIRE_REDIS_READ_FROM_REPLICAS, a
        replica the sentinels name (redis-py's Sentinel pool rotates among them, and falls back to
        the primary when none answers) or the one at FLASHWIRE_REDIS_REPLICA_URL; else the primary.
        Only for reads: a replica refuses writes (READONLY)."""
        if not self._settings.redis_read_from_replicas:
            return self.primary(cls, socket_timeout_s=socket_timeout_s)
        client: R
        if self._sentinel is not None:
            client = self._sentinel.slave_for(
                self._settings.redis_sentinel_master, redis_class=cls, **self._options(socket_timeout_s)
            )
        else:
            client = cls.from_url(self._settings.redis_replica_url, **self._options(socket_timeout_s))
        self._clients.append(client)
        return client

    @staticmethod
    def _options(socket_timeout_s: float) -> dict[str, Any]:
        return {
            "socket_timeout": socket_timeout_s,
            "socket_connect_timeout": CONNECT_TIMEOUT_S,
            "socket_keepalive": True,
            "health_check_interval": HEALTH_CHECK_INTERVAL_S,
            "retry": Retry(NoBackoff(), 0),
            "protocol": 2,
        }

    async def aclose(self) -> None:
        """Close every client opened here, then the connections to the sentinels."""
        clients, self._clients = self._clients, []
        for client in clients:
            await client.aclose()
        if self._sentinel is not None:
            for sentinel in self._sentinel.sentinels:
                await sentinel.aclose()
