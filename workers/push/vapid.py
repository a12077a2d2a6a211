"""VAPID (RFC 8292): the application server's P-256 key and the signed JWT it sends per push service.

A push service checks `Authorization: vapid t=<JWT>, k=<public key>` on every message (RFC 8292
§3): an ES256 JWT whose `aud` is the push service's origin (scheme://host[:port] of the
endpoint), whose `exp` is at most 24 hours ahead (§2; Apple answers 403 `BadJwtToken` beyond
that), and whose `sub` is a contact for the operator, a `mailto:` or `https:` URI (§2.1; Apple
refuses placeholders such as `mailto:x@localhost`: ../shared/PITFALLS.md 1.4).

`VapidSigner` signs one token per origin and hands out the same header until it nears expiry:
signing per message is waste, and one claims dict shared between origins is how pywebpush sends
the wrong `aud` (PITFALLS 1.3), so claims are built fresh for each origin here.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02

# RFC 8292 §2: "exp" MUST NOT be more than 24 hours from the time of the request.
VAPID_MAX_LIFETIME_S = 24 * 3600
# Tokens are signed for 12 hours and replaced once less than 1 hour remains, so a token in use
# is never closer than an hour to its expiry (clock skew between us and the push service).
VAPID_LIFETIME_S = 12 * 3600
VAPID_RENEW_BEFORE_S = 3600

# Names that are never a real contact (RFC 2606, RFC 6761): a push service operator cannot reach
# anyone there, and Apple refuses them.
_RESERVED_SUFFIXES = (".invalid", ".test", ".localhost", ".local", ".example", ".example.com",
                      ".example.net", ".example.org")  # fmt: skip
_RESERVED_NAMES = {"localhost", "example.com", "example.net", "example.org"}
_MAILBOX = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@([A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+)$")


def _reserved_host(host: str) -> bool:
    host = host.lower().rstrip(".")
    if host in _RESERVED_NAMES or any(host.endswith(suffix) for suffix in _RESERVED_SUFFIXES):
        return True
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return "." not in host
    return True


def validate_subject(subject: str) -> str:
    """Answer `subject` if it is a usable VAPID `sub` (RFC 8292 §2.1): `mailto:<address>` or
    `https://<host>...` with a public domain name (no IP address, no reserved or one-label name).

    Raises ValueError naming the fault otherwise.
    """
    if subject.startswith("mailto:"):
        match = _MAILBOX.match(subject.removeprefix("mailto:"))
        if match is None:
            raise ValueError(f"VAPID subject must be mailto:<address>, got {subject!r}")
        host = match.group(1)
    elif subject.startswith("https://"):
        host = urlsplit(subject).hostname or ""
    else:
        raise ValueError(f"VAPID subject must be a mailto: or https: URI, got {subject!r}")
    if _reserved_host(host):
        raise ValueError(f"VAPID subject must name a real, public contact, got {subject!r}")
    return subject


def origin_of(url: str) -> str:
    """The origin (RFC 6454) of an endpoint URL, `scheme://host[:port]`: the JWT's `aud`.

    Raises ValueError for a URL without an http(s) scheme or a host.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    default_port = 443 if parts.scheme == "https" else 80
    port = "" if parts.port in (None, default_port) else f":{parts.port}"
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}{port}"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def generate_vapid_key_pem() -> str:
    """A new VAPID private key: P-256, PKCS#8 PEM text (keep it secret; keep it for good, since
    every browser subscription is bound to its public key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def load_vapid_key(pem: str) -> ec.EllipticCurvePrivateKey:
    """The P-256 private key in `pem` (PKCS#8 or SEC 1). Raises ValueError for anything else."""
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("the VAPID key must be an EC P-256 private key")
    return key


def vapid_public_key(pem: str) -> str:
    """The `applicationServerKey` browsers subscribe with (Push API `PushManager.subscribe`):
    base64url, unpadded, of the 65-byte uncompressed P-256 point of the key in `pem`."""
    point = (
        load_vapid_key(pem)
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    return _b64url(point)


@dataclass(frozen=True, slots=True)
class _Signed:
    header: str
    exp_s: int


class VapidSigner:
    """Signs VAPID tokens for one key and subject, one per push-service origin, cached.

    :param private_key_pem: the application server's P-256 key (`generate_vapid_key_pem`).
    :param subject: `sub`, validated by `validate_subject` (ValueError if unusable).
    :param lifetime_s: `exp` - now of a new token, at most 24 hours (ValueError beyond).
    """

    def __init__(self, *, private_key_pem: str, subject: str, lifetime_s: int = VAPID_LIFETIME_S) -> None:
        if not VAPID_RENEW_BEFORE_S < lifetime_s <= VAPID_MAX_LIFETIME_S:
            raise ValueError(f"VAPID token lifetime must be in (1 h, 24 h], got {lifetime_s} s")
        self.subject = validate_subject(subject)
        self.lifetime_s = lifetime_s
        self._vapid = Vapid02(load_vapid_key(private_key_pem))
        # One entry per push-service origin: a handful (FCM, Mozilla, Apple, a few WNS hosts).
        self._cache: dict[str, _Signed] = {}
        self.signatures = 0
        """How many tokens were signed so far (the cache's misses)."""

    def authorization(self, origin: str, now_s: float) -> str:
        """The `Authorization` header value (`vapid t=…,k=…`) for a push service at `origin`,
        valid for at least another VAPID_RENEW_BEFORE_S seconds at `now_s`."""
        signed = self._cache.get(origin)
        if signed is None or signed.exp_s - now_s < VAPID_RENEW_BEFORE_S:
            exp_s = int(now_s) + self.lifetime_s
            # A fresh dict per origin: py_vapid (like pywebpush) keeps what it is given.
            claims = {"sub": self.subject, "aud": origin, "exp": exp_s}
            header = str(self._vapid.sign(claims)["Authorization"])
            signed = self._cache[origin] = _Signed(header, exp_s)
            self.signatures += 1
        return signed.header
