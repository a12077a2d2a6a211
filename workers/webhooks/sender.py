"""One HTTP attempt at an endpoint: the address rule at the moment of sending, then one POST.

The endpoint's host is resolved and every address checked by the address rule
(flashwire/core/webhook_urls.py); the request then goes to the checked address itself, with the
endpoint's name as `Host` and as the TLS server name (SNI and certificate check), so a second
lookup cannot send it elsewhere (DNS rebinding). httpx, with `follow_redirects=False` (a 3xx is a
failure, never followed: it could point inside our network), no environment proxies, no pooled
connections (a connection is never reused for another endpoint's name), and a deadline of
`FLASHWIRE_WEBHOOK_TIMEOUT_S` (15 s) for the whole attempt, the answer's head included; the
answer's body is not read. Standard Webhooks, "Retry schedule" and "Server-side request
forgery"; ../shared/PITFALLS.md 2.6.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import time
from dataclasses import dataclass

import certifi
import httpx

from flashwire.core.webhook_urls import EndpointRefused, resolve


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What one attempt came to: the HTTP status (None without an answer), an error, its duration,
    and a Retry-After in seconds if the receiver sent one."""

    status: int | None
    error: str | None
    duration_s: float
    retry_after_s: float | None = None
    refused: bool = False

    @property
    def ok(self) -> bool:
        """Only a 2xx answer is a delivery (Standard Webhooks, "Retry schedule")."""
        return self.status is not None and 200 <= self.status < 300

    @property
    def gone(self) -> bool:
        """410 Gone: the receiver says the endpoint no longer exists; it is disabled at once."""
        return self.status == 410


def _retry_after(value: str | None) -> float | None:
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


class Sender:
    """Sends attempts; one per worker process (one TLS context), closed with `aclose`."""

    def __init__(self, *, timeout_s: float, allow_private: bool, ca_file: str = "") -> None:
        self._timeout_s = timeout_s
        self._allow_private = allow_private
        context = ssl.create_default_context(cafile=ca_file or certifi.where())
        self._client = httpx.AsyncClient(
            verify=context,
            follow_redirects=False,
            trust_env=False,
            timeout=timeout_s,
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    async def post(self, url: str, headers: dict[str, str], body: bytes) -> AttemptResult:
        """POST `body` to `url` with `headers`; never raises for what the network or receiver does."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._timeout_s):
                return await self._post(url, headers, body, started)
        except EndpointRefused as exc:
            return AttemptResult(None, f"refused: {exc}", time.monotonic() - started, refused=True)
        except TimeoutError:
            return AttemptResult(None, f"no answer within {self._timeout_s:g} s", time.monotonic() - started)
        except httpx.HTTPError as exc:
            detail = str(exc) or type(exc).__name__
            return AttemptResult(None, f"{type(exc).__name__}: {detail}"[:300], time.monotonic() - started)

    async def _post(self, url: str, headers: dict[str, str], body: bytes, started: float) -> AttemptResult:
        target = httpx.URL(url)
        host = target.raw_host.decode("ascii")
        port = target.port or (443 if target.scheme == "https" else 80)
        addresses = await resolve(host, port, allow_private=self._allow_private)
        extensions: dict[str, str] = {}
        try:
            ipaddress.ip_address(host)
        except ValueError:
            extensions["sni_hostname"] = host
        # Each checked address in the resolver's order until one accepts the connection (a name
        # with IPv6 and IPv4 addresses, one of them unreachable from here).
        for index, address in enumerate(addresses):
            request = self._client.build_request(
                "POST",
                target.copy_with(host=str(address)),
                content=body,
                headers={**headers, "host": target.netloc.decode("ascii")},
                extensions=extensions,
            )
            try:
                response = await self._client.send(request, stream=True)
                break
            except httpx.ConnectError:
                if index == len(addresses) - 1:
                    raise
        await response.aclose()
        status = response.status_code
        error = None if 200 <= status < 300 else f"HTTP {status}"
        return AttemptResult(
            status, error, time.monotonic() - started, _retry_after(response.headers.get("retry-after"))
        )
