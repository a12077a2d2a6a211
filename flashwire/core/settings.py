"""Typed settings read once from the environment, validated at start-up.

Every process (service, worker, CLI) builds one `Settings` with `from_env()`
so that a bad value fails fast with the variable's name, not later mid-request.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypedDict

from limits import parse_many

from flashwire.core.vapid import validate_subject

DEFAULT_EDITIONS = ("en", "ar", "es")
DEFAULT_SECTIONS = (
    "politics",
    "economy",
    "sports",
    "arts-culture",
    "health",
    "technology",
    "environment",
    "miscellaneous",
)
DEFAULT_REGIONS = (
    "africa",
    "asia",
    "asia-pacific",
    "europe",
    "latin-america",
    "mena",
    "palestine",
    "us-canada",
)
RTL_LANGUAGES = frozenset({"ar", "he", "fa", "ur"})
# An edition code is a lower-case BCP 47 language tag (RFC 5646 §2.1: language, then subtags),
# ASCII only: it is a Redis key part, a URL path segment, a line id prefix and a Content-Language.
EDITION_CODE = re.compile(r"[a-z]{2,3}(?:-[a-z0-9]{2,8}){0,3}", re.ASCII)
TOPIC_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
LOG_FORMATS = ("text", "json")
# The browsers' push services (RFC 8030): Chrome and Edge's FCM, Firefox's autopush, Apple's,
# and Windows' WNS. A subscription endpoint must be on one of them or a subdomain.
DEFAULT_WEBPUSH_HOSTS = (
    "fcm.googleapis.com",
    "push.services.mozilla.com",
    "push.apple.com",
    "notify.windows.com",
)


class SettingsError(ValueError):
    """A configuration value is missing or malformed."""


def _int(
    env: Mapping[str, str], name: str, default: int, minimum: int = 0, maximum: int | None = None
) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise SettingsError(f"{name} must be <= {maximum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise SettingsError(f"{name} must be a finite number > 0, got {raw!r}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name} must be one of 1, 0, true, false, yes, no, on, off; got {raw!r}")


def _networks(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """Comma-separated IP addresses or CIDR networks (Python's ipaddress notation), or `*` for any."""
    values = _list(env, name, default)
    for value in values:
        if value == "*":
            continue
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise SettingsError(
                f"{name} has {value!r}; give IP addresses or networks such as 10.0.0.0/8, or *"
            ) from None
    return values


def _rate_limit(env: Mapping[str, str], name: str, default: str) -> str:
    """A rate limit in the `limits` library's notation, e.g. "30/minute" or "5/second;100/hour"."""
    raw = (env.get(name) or default).strip()
    try:
        parse_many(raw)
    except ValueError:
        raise SettingsError(
            f"{name} must be a rate limit such as '30/minute' or '5/second;100/hour', got {raw!r}"
        ) from None
    return raw


def _schedule(env: Mapping[str, str], name: str, default: tuple[float, ...]) -> tuple[float, ...]:
    """Comma-separated delays in seconds (each a finite number >= 0), at least one."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        values = tuple(float(part) for part in raw.split(","))
    except ValueError:
        raise SettingsError(f"{name} must be delays in seconds separated by commas, got {raw!r}") from None
    if not values or any(not math.isfinite(value) or value < 0 for value in values):
        raise SettingsError(f"{name} must be finite delays >= 0 in seconds, got {raw!r}")
    return values


def _fraction(env: Mapping[str, str], name: str, default: float) -> float:
    """A number in [0, 1]."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number between 0 and 1, got {raw!r}") from None
    if not 0 <= value <= 1:
        raise SettingsError(f"{name} must be between 0 and 1, got {raw!r}")
    return value


def _list(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _origin(env: Mapping[str, str], name: str, default: str) -> str:
    """An https:// (or, for local services, http://) origin such as https://api.push.apple.com."""
    raw = (env.get(name) or default).strip().rstrip("/")
    if not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+", raw):
        raise SettingsError(
            f"{name} must be an origin such as https://host or https://host:port, got {raw!r}"
        )
    return raw


def _check_push(settings: Settings) -> None:
    """A platform's settings are all given or none: half a configuration fails at start-up."""
    if settings.vapid_private_key_file:
        try:
            validate_subject(settings.vapid_subject)
        except ValueError as exc:
            raise SettingsError(
                f"FLASHWIRE_VAPID_SUBJECT: {exc} (the contact the push services see, RFC 8292 section 2.1)"
            ) from None
    apns = {
        "FLASHWIRE_APNS_KEY_FILE": settings.apns_key_file,
        "FLASHWIRE_APNS_KEY_ID": settings.apns_key_id,
        "FLASHWIRE_APNS_TEAM_ID": settings.apns_team_id,
        "FLASHWIRE_APNS_TOPIC": settings.apns_topic,
    }
    missing = [name for name, value in apns.items() if not value]
    if settings.apns_key_file and missing:
        raise SettingsError(f"APNs needs {', '.join(missing)} as well as FLASHWIRE_APNS_KEY_FILE")


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything a Flashwire process needs to know, with documented defaults."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    # Redis Cluster (docs/operations.md, "Redis Cluster"): REDIS_URL names one seed node, and arq's
    # queues need a Redis of their own (arq cannot run on a Cluster: ../shared/PITFALLS.md 3.15).
    redis_cluster: bool = False
    # arq's queues and job keys only (docs/architecture.md, "arq on a Redis of its own"); "" = REDIS_URL.
    arq_redis_url: str = ""
    key_prefix: str = "fw"
    host: str = "127.0.0.1"
    port: int = 8000
    # Processes `flashwire serve` runs on the port, each with its own hub (service/processes.py).
    serve_workers: int = 1
    editions: tuple[str, ...] = DEFAULT_EDITIONS
    sections: tuple[str, ...] = DEFAULT_SECTIONS
    regions: tuple[str, ...] = DEFAULT_REGIONS
    text_max_chars: int = 280
    max_topics: int = 8
    default_ttl_s: int = 12 * 3600
    heartbeat_s: float = 15.0
    outbox_max_frames: int = 512
    send_buffer_max_bytes: int = 64 * 1024
    direct_writes: bool = True
    max_connections: int = 18_000
    # Reader connections one client address may hold (service/client_addresses.py); the address
    # is the peer's, or the one a trusted proxy reports (trusted_proxies).
    max_connections_per_client: int = 200
    # Every client socket the process holds, readers and requests together, counted from the
    # moment it is accepted; beyond it a new socket is closed at once (service/server_limits.py).
    max_sockets: int = 19_000
    # Addresses or CIDR networks of the proxies whose X-Forwarded-For / X-Forwarded-Proto are
    # believed (uvicorn's forwarded_allow_ips); empty: none, the peer address is the client's.
    trusted_proxies: tuple[str, ...] = ()
    # Seconds a client has to send a complete request head (request line and headers).
    header_timeout_s: float = 10.0
    # Bytes a request head (request line and headers) may take: larger is answered 431.
    max_header_bytes: int = 16 * 1024
    # Bytes a request target (path and query) may take: longer is answered 414.
    max_url_bytes: int = 8 * 1024
    # Rate limits in the `limits` library's notation ("30/minute", "5/second;100/hour"), counted
    # in Redis so that every node shares them (service/rate_limits.py).
    post_rate_limit: str = "30/minute"
    auth_failure_rate_limit: str = "20/minute"
    admin_rate_limit: str = "20/minute"
    # Days an audit entry is kept before the audit stream is trimmed (MINID); 0 keeps it forever.
    audit_retention_days: int = 400
    # Most audit entries one export request returns; the answer says where the next page starts.
    audit_export_max: int = 50_000
    ticker_retention: int = 10_000
    desk_retention: int = 100_000
    replay_ring: int = 2_048
    snapshot_max_lines: int = 500
    idempotency_ttl_s: int = 24 * 3600
    max_body_bytes: int = 16 * 1024
    claim_idle_ms: int = 5_000
    allowed_origins: tuple[str, ...] = ("*",)
    feed_poll_s: float = 15.0
    # Log records as text lines or as JSON objects, one a line (flashwire/core/logs.py).
    log_format: str = "text"
    # The worker's Prometheus endpoint (workers/metrics.py): off (0) unless a port is given, since
    # several workers on one host each need a port of their own and no default could fit them all.
    worker_metrics_port: int = 0
    node_name: str = field(default_factory=lambda: f"{os.uname().nodename}-{os.getpid()}")
    # -- pushes to closed apps (docs/push.md). A platform is on when its credentials are set.
    # Web Push: the VAPID key pair's private key (PEM file) and the contact the push services
    # see as the JWT's `sub` (a real mailto: or https: URL: Apple refuses others).
    vapid_private_key_file: str = ""
    vapid_subject: str = ""
    # Hosts (and their subdomains) a Web Push subscription's endpoint may name: the browsers'
    # push services. The worker POSTs to that URL, so any other host is refused (SSRF).
    webpush_hosts: tuple[str, ...] = DEFAULT_WEBPUSH_HOSTS
    # FCM HTTP v1: a service account key file (JSON, as Google issues it) and the API's origin.
    fcm_credentials_file: str = ""
    fcm_endpoint: str = "https://fcm.googleapis.com"
    # APNs token-based authentication: the .p8 key file, its key id, the team id, the app's
    # bundle id (apns-topic), and the production and sandbox origins.
    apns_key_file: str = ""
    apns_key_id: str = ""
    apns_team_id: str = ""
    apns_topic: str = ""
    apns_endpoint: str = "https://api.push.apple.com"
    apns_sandbox_endpoint: str = "https://api.sandbox.push.apple.com"
    # A CA certificate (PEM file) trusted besides the system's for the push services: tests and
    # private deployments; empty: the system's only.
    push_ca_file: str = ""
    # Targets per arq fan-out job, sends in flight per worker process, seconds per send.
    push_batch_size: int = 500
    push_concurrency: int = 200
    push_timeout_s: float = 10.0
    # After this many seconds from its publication a line is no longer pushed (a worker that
    # was down an hour does not wake readers with old news), and pushes live at most
    # push_ttl_s in the push services (never past the line's expiry).
    push_deadline_s: int = 900
    push_ttl_s: int = 6 * 3600
    # New-line alerts one target gets per hour at most (corrections and withdrawals not counted).
    push_hourly_cap: int = 10
    # Registrations are anonymous: limited per client address, in rate and in number.
    push_registration_rate_limit: str = "30/minute;1000/day"
    push_max_registrations_per_client: int = 5_000
    # -- partner webhooks (docs/webhooks.md) --
    # Unsafe in production: lets endpoints be http:// and on private, loopback, link-local or
    # multicast addresses (development and tests only; ../shared/PITFALLS.md 2.6).
    webhook_allow_private: bool = False
    # Delays before the 2nd, 3rd, ... attempt of a delivery, in seconds: the Standard Webhooks
    # schedule (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: about 27.6 h in all).
    webhook_retry_schedule_s: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
    # Each delay is stretched by a random share of itself up to this fraction.
    webhook_retry_jitter: float = 0.1
    webhook_timeout_s: float = 15.0
    webhook_max_endpoints: int = 10
    # Seconds a rotated secret keeps signing beside the new one.
    webhook_secret_overlap_s: int = 24 * 3600
    webhook_rate_limit: str = "30/minute"
    # Messages kept in each endpoint's log (approximately), and days a delivery's record is kept.
    webhook_log_retention: int = 10_000
    webhook_delivery_retention_days: int = 7
    # Deliveries one worker runs at once (to different endpoints: one endpoint has one at a time).
    webhook_max_jobs: int = 50
    # A PEM file of CA certificates to trust for endpoints instead of the default (certifi's).
    webhook_ca_file: str = ""
    # -- Redis Sentinel and WAIT (docs/operations.md "Redis Sentinel") --
    # (host, port) of each sentinel and the name they know the primary by; empty: REDIS_URL's server.
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_sentinel_master: str = ""
    # The sentinels' own password (`requirepass` of the sentinels), if they have one.
    redis_sentinel_password: str = ""
    # Seconds a desk write keeps retrying while the primary moves (Sentinel only): longer than
    # the sentinels' down-after-milliseconds plus the failover itself.
    redis_failover_retry_s: float = 15.0
    # Replicas that must acknowledge a desk write (WAIT) before it is answered 201 (0: no WAIT),
    # and how long to wait for them, in milliseconds.
    wait_replicas: int = 0
    wait_timeout_ms: int = 500
    # Service nodes read the tickers (live reads, replays, snapshots) from a replica: one the
    # sentinels name, or, without Sentinel, the one at redis_replica_url. Writes stay on the primary.
    redis_read_from_replicas: bool = False
    redis_replica_url: str = ""

    @property
    def topics(self) -> tuple[str, ...]:
        """Sections and regions: the topic slugs a line may carry."""
        return self.sections + self.regions

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read FLASHWIRE_* variables (and REDIS_URL); docs/configuration.md lists them."""
        env = os.environ if env is None else env
        editions = _list(env, "FLASHWIRE_EDITIONS", DEFAULT_EDITIONS)
        for edition in editions:
            if not EDITION_CODE.fullmatch(edition):
                raise SettingsError(
                    f"FLASHWIRE_EDITIONS has {edition!r}; editions are lower-case BCP 47 language tags"
                    " such as 'en' or 'pt-br'"
                )
        sections = _list(env, "FLASHWIRE_SECTIONS", DEFAULT_SECTIONS)
        regions = _list(env, "FLASHWIRE_REGIONS", DEFAULT_REGIONS)
        for name, values in (("FLASHWIRE_SECTIONS", sections), ("FLASHWIRE_REGIONS", regions)):
            for slug in values:
                if not TOPIC_SLUG.match(slug):
                    raise SettingsError(
                        f"{name} has {slug!r}; topics are lower-case slugs such as 'arts-culture'"
                    )
        settings = cls(
            redis_url=env.get("REDIS_URL") or cls.redis_url,
            redis_cluster=_bool(env, "FLASHWIRE_REDIS_CLUSTER", cls.redis_cluster),
            arq_redis_url=env.get("FLASHWIRE_ARQ_REDIS_URL") or cls.arq_redis_url,
            key_prefix=env.get("FLASHWIRE_KEY_PREFIX") or cls.key_prefix,
            host=env.get("FLASHWIRE_HOST") or cls.host,
            port=_int(env, "FLASHWIRE_PORT", cls.port, 0, 65535),
            serve_workers=_int(env, "FLASHWIRE_SERVE_WORKERS", cls.serve_workers, 1, 256),
            editions=editions,
            sections=sections,
            regions=regions,
            text_max_chars=_int(env, "FLASHWIRE_TEXT_MAX_CHARS", cls.text_max_chars, 1),
            default_ttl_s=_int(env, "FLASHWIRE_DEFAULT_TTL_S", cls.default_ttl_s, 1),
            heartbeat_s=_float(env, "FLASHWIRE_HEARTBEAT_S", cls.heartbeat_s),
            outbox_max_frames=_int(env, "FLASHWIRE_OUTBOX_MAX_FRAMES", cls.outbox_max_frames, 1),
            send_buffer_max_bytes=_int(
                env, "FLASHWIRE_SEND_BUFFER_MAX_BYTES", cls.send_buffer_max_bytes, 1024
            ),
            max_connections=_int(env, "FLASHWIRE_MAX_CONNECTIONS", cls.max_connections, 1),
            max_connections_per_client=_int(
                env, "FLASHWIRE_MAX_CONNECTIONS_PER_CLIENT", cls.max_connections_per_client, 1
            ),
            max_sockets=_int(env, "FLASHWIRE_MAX_SOCKETS", cls.max_sockets, 1),
            trusted_proxies=_networks(env, "FLASHWIRE_TRUSTED_PROXIES", cls.trusted_proxies),
            header_timeout_s=_float(env, "FLASHWIRE_HEADER_TIMEOUT_S", cls.header_timeout_s),
            max_header_bytes=_int(env, "FLASHWIRE_MAX_HEADER_BYTES", cls.max_header_bytes, 1024),
            max_url_bytes=_int(env, "FLASHWIRE_MAX_URL_BYTES", cls.max_url_bytes, 256),
            post_rate_limit=_rate_limit(env, "FLASHWIRE_POST_RATE_LIMIT", cls.post_rate_limit),
            auth_failure_rate_limit=_rate_limit(
                env, "FLASHWIRE_AUTH_FAILURE_RATE_LIMIT", cls.auth_failure_rate_limit
            ),
            admin_rate_limit=_rate_limit(env, "FLASHWIRE_ADMIN_RATE_LIMIT", cls.admin_rate_limit),
            audit_retention_days=_int(env, "FLASHWIRE_AUDIT_RETENTION_DAYS", cls.audit_retention_days, 0),
            audit_export_max=_int(env, "FLASHWIRE_AUDIT_EXPORT_MAX", cls.audit_export_max, 1),
            ticker_retention=_int(env, "FLASHWIRE_TICKER_RETENTION", cls.ticker_retention, 10),
            snapshot_max_lines=_int(env, "FLASHWIRE_SNAPSHOT_MAX_LINES", cls.snapshot_max_lines, 1),
            claim_idle_ms=_int(env, "FLASHWIRE_CLAIM_IDLE_MS", cls.claim_idle_ms, 100),
            allowed_origins=_list(env, "FLASHWIRE_ALLOWED_ORIGINS", cls.allowed_origins),
            direct_writes=_bool(env, "FLASHWIRE_DIRECT_WRITES", cls.direct_writes),
            feed_poll_s=_float(env, "FLASHWIRE_FEED_POLL_S", cls.feed_poll_s),
            log_format=(env.get("FLASHWIRE_LOG_FORMAT") or cls.log_format).strip().lower(),
            worker_metrics_port=_int(env, "FLASHWIRE_WORKER_METRICS_PORT", cls.worker_metrics_port, 0, 65535),
            vapid_private_key_file=env.get("FLASHWIRE_VAPID_PRIVATE_KEY_FILE") or "",
            vapid_subject=(env.get("FLASHWIRE_VAPID_SUBJECT") or "").strip(),
            webpush_hosts=tuple(
                host.lower() for host in _list(env, "FLASHWIRE_WEBPUSH_HOSTS", cls.webpush_hosts)
            ),
            fcm_credentials_file=env.get("FLASHWIRE_FCM_CREDENTIALS_FILE") or "",
            fcm_endpoint=_origin(env, "FLASHWIRE_FCM_ENDPOINT", cls.fcm_endpoint),
            apns_key_file=env.get("FLASHWIRE_APNS_KEY_FILE") or "",
            apns_key_id=(env.get("FLASHWIRE_APNS_KEY_ID") or "").strip(),
            apns_team_id=(env.get("FLASHWIRE_APNS_TEAM_ID") or "").strip(),
            apns_topic=(env.get("FLASHWIRE_APNS_TOPIC") or "").strip(),
            apns_endpoint=_origin(env, "FLASHWIRE_APNS_ENDPOINT", cls.apns_endpoint),
            apns_sandbox_endpoint=_origin(env, "FLASHWIRE_APNS_SANDBOX_ENDPOINT", cls.apns_sandbox_endpoint),
            push_ca_file=env.get("FLASHWIRE_PUSH_CA_FILE") or "",
            push_batch_size=_int(env, "FLASHWIRE_PUSH_BATCH_SIZE", cls.push_batch_size, 1, 10_000),
            push_concurrency=_int(env, "FLASHWIRE_PUSH_CONCURRENCY", cls.push_concurrency, 1, 5_000),
            push_timeout_s=_float(env, "FLASHWIRE_PUSH_TIMEOUT_S", cls.push_timeout_s),
            push_deadline_s=_int(env, "FLASHWIRE_PUSH_DEADLINE_S", cls.push_deadline_s, 1),
            push_ttl_s=_int(env, "FLASHWIRE_PUSH_TTL_S", cls.push_ttl_s, 1, 28 * 24 * 3600),
            push_hourly_cap=_int(env, "FLASHWIRE_PUSH_HOURLY_CAP", cls.push_hourly_cap, 1),
            push_registration_rate_limit=_rate_limit(
                env, "FLASHWIRE_PUSH_REGISTRATION_RATE_LIMIT", cls.push_registration_rate_limit
            ),
            push_max_registrations_per_client=_int(
                env, "FLASHWIRE_PUSH_MAX_REGISTRATIONS_PER_CLIENT", cls.push_max_registrations_per_client, 1
            ),
            **_webhook_settings(env, cls),
            **_redis_ha_settings(env, cls),
        )
        _check_push(settings)
        if settings.max_sockets < settings.max_connections:
            raise SettingsError(
                f"FLASHWIRE_MAX_SOCKETS ({settings.max_sockets}) must be at least"
                f" FLASHWIRE_MAX_CONNECTIONS ({settings.max_connections}): every reader is a socket"
            )
        if settings.max_url_bytes > settings.max_header_bytes:
            raise SettingsError(
                f"FLASHWIRE_MAX_URL_BYTES ({settings.max_url_bytes}) must not exceed"
                f" FLASHWIRE_MAX_HEADER_BYTES ({settings.max_header_bytes}): the target is part of the head"
            )
        if settings.log_format not in LOG_FORMATS:
            raise SettingsError(
                f"FLASHWIRE_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, got {settings.log_format!r}"
            )
        if not settings.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise SettingsError(
                f"REDIS_URL must be redis://, rediss:// or unix://, got {settings.redis_url!r}"
            )
        if settings.arq_redis_url and not settings.arq_redis_url.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise SettingsError(
                "FLASHWIRE_ARQ_REDIS_URL must be redis://, rediss:// or unix://,"
                f" got {settings.arq_redis_url!r}"
            )
        if settings.redis_cluster and (settings.redis_sentinels or settings.redis_read_from_replicas):
            raise SettingsError(
                "FLASHWIRE_REDIS_CLUSTER cannot be combined with FLASHWIRE_REDIS_SENTINELS or"
                " FLASHWIRE_REDIS_READ_FROM_REPLICAS: a Cluster fails over by itself, and reads from its"
                " replicas are not supported yet (docs/operations.md, 'Redis Cluster')"
            )
        if settings.redis_cluster and settings.wait_replicas:
            raise SettingsError(
                "FLASHWIRE_WAIT_REPLICAS is not supported with FLASHWIRE_REDIS_CLUSTER: redis-py sends WAIT"
                " to the client's default node, not to the shard that took the write, so its count would"
                " say nothing about the post (docs/operations.md, 'Redis Cluster')"
            )
        if settings.redis_cluster and settings.arq_url == settings.redis_url:
            raise SettingsError(
                "FLASHWIRE_REDIS_CLUSTER is on: set FLASHWIRE_ARQ_REDIS_URL to a Redis that is not part"
                " of the Cluster (arq's queues cannot run on a Redis Cluster; docs/operations.md,"
                " 'Redis Cluster')"
            )
        return settings

    @property
    def arq_url(self) -> str:
        """The Redis of arq's queues and job keys: FLASHWIRE_ARQ_REDIS_URL, or REDIS_URL."""
        return self.arq_redis_url or self.redis_url

    @property
    def push_platforms(self) -> tuple[str, ...]:
        """The push platforms whose credentials are set: "webpush", "fcm", "apns"."""
        configured = {
            "webpush": self.vapid_private_key_file,
            "fcm": self.fcm_credentials_file,
            "apns": self.apns_key_file,
        }
        return tuple(platform for platform, file in configured.items() if file)

    def direction(self, edition: str) -> str:
        """Text direction of an edition: 'rtl' for right-to-left languages."""
        return "rtl" if edition.split("-")[0] in RTL_LANGUAGES else "ltr"


class _WebhookSettings(TypedDict):
    webhook_allow_private: bool
    webhook_retry_schedule_s: tuple[float, ...]
    webhook_retry_jitter: float
    webhook_timeout_s: float
    webhook_max_endpoints: int
    webhook_secret_overlap_s: int
    webhook_rate_limit: str
    webhook_log_retention: int
    webhook_delivery_retention_days: int
    webhook_max_jobs: int
    webhook_ca_file: str


def _webhook_settings(env: Mapping[str, str], cls: type[Settings]) -> _WebhookSettings:
    """The FLASHWIRE_WEBHOOK_* settings (docs/webhooks.md)."""
    timeout_s = _float(env, "FLASHWIRE_WEBHOOK_TIMEOUT_S", cls.webhook_timeout_s)
    if timeout_s > 60:
        raise SettingsError(f"FLASHWIRE_WEBHOOK_TIMEOUT_S must be at most 60, got {timeout_s}")
    ca_file = (env.get("FLASHWIRE_WEBHOOK_CA_FILE") or "").strip()
    if ca_file and not os.path.isfile(ca_file):
        raise SettingsError(f"FLASHWIRE_WEBHOOK_CA_FILE names no file: {ca_file!r}")
    return {
        "webhook_allow_private": _bool(env, "FLASHWIRE_WEBHOOK_ALLOW_PRIVATE", cls.webhook_allow_private),
        "webhook_retry_schedule_s": _schedule(
            env, "FLASHWIRE_WEBHOOK_RETRY_SCHEDULE_S", cls.webhook_retry_schedule_s
        ),
        "webhook_retry_jitter": _fraction(env, "FLASHWIRE_WEBHOOK_RETRY_JITTER", cls.webhook_retry_jitter),
        "webhook_timeout_s": timeout_s,
        "webhook_max_endpoints": _int(env, "FLASHWIRE_WEBHOOK_MAX_ENDPOINTS", cls.webhook_max_endpoints, 1),
        "webhook_secret_overlap_s": _int(
            env, "FLASHWIRE_WEBHOOK_SECRET_OVERLAP_S", cls.webhook_secret_overlap_s, 0
        ),
        "webhook_rate_limit": _rate_limit(env, "FLASHWIRE_WEBHOOK_RATE_LIMIT", cls.webhook_rate_limit),
        "webhook_log_retention": _int(env, "FLASHWIRE_WEBHOOK_LOG_RETENTION", cls.webhook_log_retention, 100),
        "webhook_delivery_retention_days": _int(
            env, "FLASHWIRE_WEBHOOK_DELIVERY_RETENTION_DAYS", cls.webhook_delivery_retention_days, 1
        ),
        "webhook_max_jobs": _int(env, "FLASHWIRE_WEBHOOK_MAX_JOBS", cls.webhook_max_jobs, 1, 1000),
        "webhook_ca_file": ca_file,
    }


class _RedisHaSettings(TypedDict):
    redis_sentinels: tuple[tuple[str, int], ...]
    redis_sentinel_master: str
    redis_sentinel_password: str
    redis_failover_retry_s: float
    wait_replicas: int
    wait_timeout_ms: int
    redis_read_from_replicas: bool
    redis_replica_url: str


def _sentinel_address(raw: str) -> tuple[str, int]:
    host, _, port = raw.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingsError(
            f"FLASHWIRE_REDIS_SENTINELS must be host:port entries separated by commas, got {raw!r}"
        )
    return host, int(port)


def _redis_ha_settings(env: Mapping[str, str], cls: type[Settings]) -> _RedisHaSettings:
    """The Sentinel and WAIT settings (docs/operations.md "Redis Sentinel"): sentinels and a master
    name go together, since a client needs both to ask where the primary is."""
    sentinels = tuple(_sentinel_address(raw) for raw in _list(env, "FLASHWIRE_REDIS_SENTINELS", ()))
    master = (env.get("FLASHWIRE_REDIS_SENTINEL_MASTER") or "").strip()
    if sentinels and not master:
        raise SettingsError(
            "FLASHWIRE_REDIS_SENTINELS is set but FLASHWIRE_REDIS_SENTINEL_MASTER is not: name the primary"
            " as the sentinels know it (their `sentinel monitor <name> ...`)"
        )
    if master and not sentinels:
        raise SettingsError("FLASHWIRE_REDIS_SENTINEL_MASTER is set but FLASHWIRE_REDIS_SENTINELS is not")
    from_replicas = _bool(env, "FLASHWIRE_REDIS_READ_FROM_REPLICAS", cls.redis_read_from_replicas)
    replica_url = (env.get("FLASHWIRE_REDIS_REPLICA_URL") or "").strip()
    if replica_url and sentinels:
        raise SettingsError(
            "FLASHWIRE_REDIS_REPLICA_URL is for a deployment without Sentinel: with FLASHWIRE_REDIS_SENTINELS"
            " the sentinels name the replicas"
        )
    if replica_url and not replica_url.startswith(("redis://", "rediss://", "unix://")):
        raise SettingsError(
            f"FLASHWIRE_REDIS_REPLICA_URL must be redis://, rediss:// or unix://, got {replica_url!r}"
        )
    if from_replicas and not (sentinels or replica_url):
        raise SettingsError(
            "FLASHWIRE_REDIS_READ_FROM_REPLICAS needs FLASHWIRE_REDIS_SENTINELS (replicas found by the"
            " sentinels) or FLASHWIRE_REDIS_REPLICA_URL (one replica)"
        )
    if replica_url and not from_replicas:
        raise SettingsError(
            "FLASHWIRE_REDIS_REPLICA_URL is set but FLASHWIRE_REDIS_READ_FROM_REPLICAS is off"
        )
    return {
        "redis_sentinels": sentinels,
        "redis_sentinel_master": master,
        "redis_sentinel_password": env.get("FLASHWIRE_REDIS_SENTINEL_PASSWORD") or "",
        "redis_failover_retry_s": _float(env, "FLASHWIRE_REDIS_FAILOVER_RETRY_S", cls.redis_failover_retry_s),
        "wait_replicas": _int(env, "FLASHWIRE_WAIT_REPLICAS", cls.wait_replicas, 0, 100),
        "wait_timeout_ms": _int(env, "FLASHWIRE_WAIT_TIMEOUT_MS", cls.wait_timeout_ms, 1, 60_000),
        "redis_read_from_replicas": from_replicas,
        "redis_replica_url": replica_url,
    }
