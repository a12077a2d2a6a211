"""Where a webhook may be sent: the endpoint URL rule and the address rule against SSRF.

A partner names the URL; our worker connects to it from inside our network. Without a rule,
`https://10.0.0.5/` or a name that resolves to 127.0.0.1 turns the webhook into a request
forgery against our own services (Standard Webhooks, "Server-side request forgery";
../shared/PITFALLS.md 2.6). So:

- the URL is an absolute `https` URL by the one URL rule (flashwire/core/text.py: a valid host,
  no credentials, a port in 1-65535), without a fragment;
- every address its host resolves to must be a public unicast address: not private, loopback,
  link-local, multicast, reserved, unspecified, shared (100.64.0.0/10), nor an IPv4-mapped,
  6to4 or Teredo form of one. It is checked when the endpoint is registered and again at each
  delivery against the address the worker then connects to (a name may change its answer,
  "DNS rebinding"); the worker connects to the address it checked, not to a second lookup.

`FLASHWIRE_WEBHOOK_ALLOW_PRIVATE=1` lifts both rules (http:// and any address) for development
and tests only: unsafe in production.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from flashwire.core.text import TextRuleError, http_url

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# 100.64.0.0/10 (RFC 6598, carrier-grade NAT) is neither private nor global in Python's view.
_SHARED = ipaddress.ip_network("100.64.0.0/10")
# 192.0.0.0/24 (RFC 6890, IETF protocol assignments): Python calls only parts of it private.
_IETF_PROTOCOL = ipaddress.ip_network("192.0.0.0/24")
# A name that takes longer to resolve is refused (at registration) or a failed attempt (sending).
RESOLVE_TIMEOUT_S = 5.0


class EndpointRefused(ValueError):
    """The endpoint URL, or an address it resolves to, is not one a webhook may be sent to."""


def refused_address(address: IpAddress) -> str | None:
    """Why a webhook may not be sent to `address` ('loopback', 'private', ...), or None if it may."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo or (None, None))[1]
        if embedded is not None:
            reason = refused_address(embedded)
            return f"{reason} (embedded in {address})" if reason else None
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("shared", address in _SHARED),
        ("IETF protocol assignment", address in _IETF_PROTOCOL),
        # fec0::/10 (RFC 3879 deprecated it, but routers may still route it internally).
        ("site-local", isinstance(address, ipaddress.IPv6Address) and address.is_site_local),
        ("reserved", address.is_reserved),
        ("not global", not address.is_global),
    )
    return next((name for name, hit in checks if hit), None)


def endpoint_url(value: str, *, allow_private: bool) -> str:
    """`value` if it is an endpoint URL by the rule above (the address check aside); EndpointRefused
    saying why otherwise. An IP literal host is checked here already."""
    try:
        url = http_url(value)
    except TextRuleError as exc:
        raise EndpointRefused(exc.message) from None
    parts = urlsplit(url)
    if parts.fragment or url.endswith("#"):
        raise EndpointRefused("must not have a fragment (#...)")
    if parts.scheme.lower() != "https" and not allow_private:
        raise EndpointRefused("must be an https URL")
    host = parts.hostname or ""
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        if not allow_private and (host == "localhost" or host.endswith(".localhost")):
            raise EndpointRefused("must not name a loopback host") from None
        return url
    reason = refused_address(literal)
    if reason and not allow_private:
        raise EndpointRefused(f"must not name a {reason} address ({literal})")
    return url


async def resolve(host: str, port: int, *, allow_private: bool) -> list[IpAddress]:
    """The addresses `host` resolves to, every one of them allowed; EndpointRefused if any is not
    (a name with one private answer is refused whole: which answer a client uses is not ours to
    know) or if the name does not resolve."""
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        found = [literal]
        return _allowed(host, found, allow_private)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_S):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:  # TimeoutError is an OSError
        raise EndpointRefused(f"{host} does not resolve ({exc})") from None
    found = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    if not found:
        raise EndpointRefused(f"{host} has no address")
    return _allowed(host, found, allow_private)


def _allowed(host: str, found: list[IpAddress], allow_private: bool) -> list[IpAddress]:
    if not allow_private:
        for address in found:
            reason = refused_address(address)
            if reason:
                raise EndpointRefused(f"{host} resolves to a {reason} address ({address})")
    return found
