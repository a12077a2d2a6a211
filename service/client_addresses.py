"""Reader connections per client address on one node (FLASHWIRE_MAX_CONNECTIONS_PER_CLIENT).

Without a cap, one client address can take every reader slot of a node and lock everyone else
out. Both reader endpoints (service/ws.py, service/sse.py) count a connection here from the
moment it is accepted until it ends, however it ends, and refuse the next one from an address
that holds the limit: WebSocket with close 1013 and `PER_CLIENT_REASON`, SSE with `429`.

The address is `scope["client"]`: the peer's, or, when the peer is a trusted proxy
(FLASHWIRE_TRUSTED_PROXIES), the client it reports in X-Forwarded-For (uvicorn's
ProxyHeadersMiddleware, configured in service/server_limits.py's `edge_options`). An IPv6
client is counted by its /64 network, the block one subscriber or device is given (RFC 6177,
RFC 7934): counting single IPv6 addresses would give one client 2**64 of them. An IPv4-mapped
IPv6 address counts as its IPv4 address.
"""

from __future__ import annotations

import ipaddress

from starlette.types import Scope

IPV6_CLIENT_PREFIX = 64


def per_client_reason(limit: int) -> str:
    """The refusal's text (a WebSocket close reason, the SSE error message): it says which limit."""
    return f"too many connections from your address (at most {limit}); retry later"


def client_address(scope: Scope) -> str:
    """The key a connection is counted under: an IPv4 address, an IPv6 /64 network, or, for what
    is not an IP address (a trusted proxy's odd value; no peer address at all: ""), the text."""
    client = scope.get("client")
    host = str(client[0]) if client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:100]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_CLIENT_PREFIX), strict=False))
    return str(address)


class ClientAddresses:
    """How many reader connections each client address holds on this node, and its limit."""

    __slots__ = ("_counts", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._counts: dict[str, int] = {}

    def full(self, address: str) -> bool:
        """Does `address` already hold `limit` connections?"""
        return self._counts.get(address, 0) >= self.limit

    def add(self, address: str) -> None:
        """Count one more connection of `address` (after `full` said no, with no await between)."""
        self._counts[address] = self._counts.get(address, 0) + 1

    def remove(self, address: str) -> None:
        """Count one connection of `address` less; an address with none is forgotten."""
        count = self._counts.get(address, 0) - 1
        if count > 0:
            self._counts[address] = count
        else:
            self._counts.pop(address, None)

    def count(self, address: str) -> int:
        """Connections `address` holds now."""
        return self._counts.get(address, 0)

    def __len__(self) -> int:
        """Addresses holding at least one connection."""
        return len(self._counts)
