"""Rate limits shared by every node, counted in Redis by the `limits` library.

Four limits, each a `limits` notation string from the settings (docs/configuration.md):

- desk actions per token (`FLASHWIRE_POST_RATE_LIMIT`): posts, corrections, retractions, pins,
  unpins, expiry changes and cancellations; an action counts once its token is checked (and, on a
  line, the line found and the token allowed), accepted or then refused (409, 422), except the
  replay of an `Idempotency-Key` already answered (service/api.py);
- failed authentications per client address (`FLASHWIRE_AUTH_FAILURE_RATE_LIMIT`): once over,
  every request from that address carrying credentials is refused whatever its token (looked
  up in the same round trip as the check, its answer unused: service/http.py), so guessing
  stops until the window passes (OWASP Authentication Cheat Sheet, "Protect Against Automated
  Attacks");
- admin actions per token (`FLASHWIRE_ADMIN_RATE_LIMIT`): token creations and revocations;
- push registrations per client address (`FLASHWIRE_PUSH_REGISTRATION_RATE_LIMIT`), which fail
  closed as desk actions do (service/push_api.py).

Over a limit the answer is `429 rate_limited` (RFC 6585 §4) with `Retry-After` in whole seconds
(RFC 9110 §10.2.3), taken from the limiter's window statistics. The client address is the one
the per-client connection cap counts (service/client_addresses.py): the ASGI scope's `client`,
i.e. the peer or the client a trusted proxy reported (FLASHWIRE_TRUSTED_PROXIES), an IPv6 client
by its /64 network, so that one client cannot spread its guesses over 2**64 addresses.

Strategy: the sliding window counter (`limits.aio.strategies.SlidingWindowCounterRateLimiter`).
Its Lua scripts measure time with Redis's own key TTLs, so nodes with skewed clocks count alike
(the moving window passes each node's clock into Redis), and it does not let twice the limit
through across a window boundary as a fixed window does. Its two keys per counter carry the
library's own hash tag, so they share a Cluster slot (docs/operations.md, key `fw:rate`).

When Redis cannot count (limits' StorageError: the store is down, or refuses writes) each limit
follows a policy chosen for it:

- desk and admin actions fail closed: `503 unavailable` with `Retry-After: 1`, as every write does
  without Redis; the client retries (with the same `Idempotency-Key`) once Redis is back;
- failed authentications fail open: the token is still checked (against Redis: with no Redis at
  all that answers 503 anyway), so a Redis that refuses only writes (a failover, `NOREPLICAS`)
  does not lock every editor out. Tokens carry 192 random bits, so the limit is a brake on
  noise and abuse, not what keeps a token secret. One warning is logged per outage.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from limits import RateLimitItem, parse_many
from limits.aio.storage import RedisClusterStorage, RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError
from redis.asyncio import Redis
from starlette.requests import Request

from flashwire.core.keys import Keys
from flashwire.core.settings import Settings
from flashwire.service import client_addresses
from flashwire.service.errors import ApiError

log = logging.getLogger(__name__)

RATE_LIMITED = "rate_limited"
# The address counted for a request that has none in its scope (a Unix socket).
UNKNOWN_CLIENT = "unknown"


@dataclass(frozen=True)
class RateLimit:
    """One configured limit: its name in the Redis keys, what it counts (for the 429's message),
    the setting it comes from, its windows, and whether it lets requests through when Redis
    cannot count."""

    name: str
    counts: str
    variable: str
    items: tuple[RateLimitItem, ...]
    fail_open: bool
    field: str | None = None

    @classmethod
    def parse(
        cls,
        name: str,
        counts: str,
        variable: str,
        notation: str,
        *,
        fail_open: bool,
        field: str | None = None,
    ) -> RateLimit:
        """A limit from the settings' notation ("30/minute", "5/second;100/hour"), validated at start-up
        by Settings.from_env; ValueError if it does not parse."""
        return cls(name, counts, variable, tuple(parse_many(notation)), fail_open, field)


def client_address(request: Request) -> str:
    """The client address a per-address limit counts (service/client_addresses.py: an IPv4 address
    or an IPv6 /64 network), or "unknown" when the scope has none."""
    return client_addresses.client_address(request.scope) or UNKNOWN_CLIENT


class RateLimits:
    """The node's limiter over the service's Redis connection pool, and the three limits.

    Built once in the app's lifespan (service/app.py) and kept as `app.state.rate_limits`.
    """

    def __init__(self, redis: Redis, keys: Keys, settings: Settings) -> None:
        # The service's own pool, so one redis-py client (its timeouts, keepalive) serves both; with
        # a pool given, limits' redis-py bridge ignores the URI (it needs one that parses).
        storage: RedisStorage | RedisClusterStorage
        if settings.redis_cluster:
            # A Cluster client has no single pool to share: limits opens its own redis-py Cluster
            # client from the seed node REDIS_URL names (its keys carry their own hash tags).
            storage = RedisClusterStorage(
                "async+redis+cluster://" + urlsplit(settings.redis_url).netloc,
                implementation="redispy",
                wrap_exceptions=True,
                key_prefix=keys.rate_limits,
            )
        else:
            options: dict[str, Any] = {"connection_pool": redis.connection_pool}
            storage = RedisStorage(
                "async+redis://",
                implementation="redispy",
                wrap_exceptions=True,
                key_prefix=keys.rate_limits,
                **options,
            )
        self._limiter = SlidingWindowCounterRateLimiter(storage)
        self._failing: set[str] = set()
        self.desk_actions = RateLimit.parse(
            "post",
            "desk actions by this token",
            "FLASHWIRE_POST_RATE_LIMIT",
            settings.post_rate_limit,
            fail_open=False,
        )
        self.auth_failures = RateLimit.parse(
            "auth-failure",
            "failed authentications from this address",
            "FLASHWIRE_AUTH_FAILURE_RATE_LIMIT",
            settings.auth_failure_rate_limit,
            fail_open=True,
            field="Authorization",
        )
        self.admin_actions = RateLimit.parse(
            "admin",
            "token creations and revocations by this token",
            "FLASHWIRE_ADMIN_RATE_LIMIT",
            settings.admin_rate_limit,
            fail_open=False,
        )
        self.push_registrations = RateLimit.parse(
            "push-registration",
            "push registrations from this address",
            "FLASHWIRE_PUSH_REGISTRATION_RATE_LIMIT",
            settings.push_registration_rate_limit,
            fail_open=False,
        )

    async def hit(self, limit: RateLimit, who: str) -> None:
        """Count one action of `who` (a token id or a client address) against every window of
        `limit`, in order, stopping at the first one that is full: ApiError 429 with Retry-After
        then (the windows counted before it keep the count, as a refused request still cost
        work); ApiError 503 if Redis cannot count and the limit fails closed."""
        for item in limit.items:
            allowed = await self._ask(limit, "counted", self._limiter.hit(item, limit.name, who))
            if not allowed:
                raise await self._refusal(limit, item, who)

    async def check(self, limit: RateLimit, who: str) -> None:
        """Refuse (ApiError 429 with Retry-After) if any window of `limit` is full for `who`,
        without counting anything; ApiError 503 if Redis cannot tell and the limit fails closed."""
        for item in limit.items:
            allowed = await self._ask(limit, "checked", self._limiter.test(item, limit.name, who))
            if not allowed:
                raise await self._refusal(limit, item, who)

    async def _ask(self, limit: RateLimit, verb: str, question: Awaitable[bool]) -> bool:
        """The limiter's answer, or the limit's policy when Redis cannot give one. One warning when
        a limit stops being `verb` ("counted" or "checked": a Redis that refuses writes still
        answers checks), one line when it is again."""
        state = f"{limit.name} {verb}"
        try:
            answer = bool(await question)
        except StorageError as exc:
            if state not in self._failing:
                self._failing.add(state)
                policy = "letting requests through" if limit.fail_open else "refusing with 503"
                log.warning(
                    "rate limit %s cannot be %s (%s): %s", limit.name, verb, exc.storage_error, policy
                )
            if limit.fail_open:
                return True
            retry = " (with the same Idempotency-Key)" if limit is self.desk_actions else ""
            message = f"the store is unavailable; retry shortly{retry}"
            raise ApiError(503, "unavailable", message, headers={"Retry-After": "1"}) from None
        if state in self._failing:
            self._failing.discard(state)
            log.info("rate limit %s is %s again", limit.name, verb)
        return answer

    async def _refusal(self, limit: RateLimit, item: RateLimitItem, who: str) -> ApiError:
        """The 429 for a full window: Retry-After is the time until the window lets one more
        action through, from the limiter's statistics, in whole seconds and at least 1."""
        retry_s = 1
        try:
            stats = await self._limiter.get_window_stats(item, limit.name, who)
            retry_s = max(1, math.ceil(stats.reset_time - time.time()))
        except StorageError:
            pass  # refused already; the statistics are only the hint
        unit = item.GRANULARITY.name
        per = unit if item.multiples == 1 else f"{item.multiples} {unit}s"
        message = (
            f"too many {limit.counts}: {limit.variable} allows {item.amount} per {per}; retry in {retry_s} s"
        )
        return ApiError(429, RATE_LIMITED, message, field=limit.field, headers={"Retry-After": str(retry_s)})
