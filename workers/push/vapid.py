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
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import urlsplit

from py_vapid import Vapid02

from flashwire.core.vapid import load_vapid_key, validate_subject

# RFC 8292 §2: "exp" MUST NOT be more than 24 hours from the time of the request.
VAPID_MAX_LIFETIME_S = 24 * 3600
# Tokens are signed for 12 hours and replaced once less than 1 hour remains, so a token in use
# is never closer than an hour to its expiry (clock skew between us and the push service).
VAPID_LIFETIME_S = 12 * 3600
VAPID_RENEW_BEFORE_S = 3600
# Push-service origins whose signed header is kept.
MAX_ORIGINS = 256


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


@dataclass(frozen=True, slots=True)
class _Signed:
    header: str
    exp_s: int


class VapidSigner:
    """Signs VAPID tokens for one key and subject, one per push-service origin, cached.

    :param private_key_pem: the application server's P-256 key (`generate_vapid_key_pem`).
    :param subject: `sub`, validated by `validate_subject` (ValueError if not a mailto: or https: URI).
    :param lifetime_s: `exp` - now of a new token, at most 24 hours (ValueError beyond).
    """

    def __init__(self, *, private_key_pem: str, subject: str, lifetime_s: int = VAPID_LIFETIME_S) -> None:
        if not VAPID_RENEW_BEFORE_S < lifetime_s <= VAPID_MAX_LIFETIME_S:
            raise ValueError(f"VAPID token lifetime must be in (1 h, 24 h], got {lifetime_s} s")
        self.subject = validate_subject(subject)
        self.lifetime_s = lifetime_s
        self._vapid = Vapid02(load_vapid_key(private_key_pem))
        # One entry per push-service origin: a handful (FCM, Mozilla, Apple, WNS's regional
        # hosts); bounded all the same, oldest use first out, since registrations pick the host.
        self._cache: OrderedDict[str, _Signed] = OrderedDict()
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
            if len(self._cache) > MAX_ORIGINS:
                self._cache.popitem(last=False)
        self._cache.move_to_end(origin)
        return signed.header
