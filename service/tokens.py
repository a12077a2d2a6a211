"""Bearer tokens for editors: scoped to editions and a role, stored hashed.

A token reads `fwt_<id>_<secret>`. Redis keeps only the SHA-256 of the secret,
so a leaked Redis dump does not leak usable tokens; the secret is compared in
constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import asdict, dataclass

import orjson
from redis.asyncio import Redis

from flashwire.core.clock import iso_from_ms, now_ms
from flashwire.core.keys import Keys
from flashwire.core.models import TOKEN_NAME_MAX_CHARS, TokenRecord
from flashwire.core.text import free_text

ROLES = ("editor", "chief", "admin", "partner")
ALL_EDITIONS = "*"
# What each role may do, on the editions its token is scoped to.
EDITOR_ACTIONS = frozenset({"read", "post", "correct", "expiry"})
CHIEF_ACTIONS = EDITOR_ACTIONS | {"retract", "pin", "schedule"}
ROLE_ACTIONS: dict[str, frozenset[str]] = {
    "editor": EDITOR_ACTIONS,
    "chief": CHIEF_ACTIONS,
    # Admins manage tokens; on the editions they hold they may also do what a chief does.
    "admin": CHIEF_ACTIONS | {"manage-tokens", "manage-webhooks"},
    # -- partner webhooks (service/webhooks.py): a partner registers and manages its own endpoints
    # for the editions its token holds, and does nothing on the desk.
    "partner": frozenset({"webhooks"}),
}


@dataclass(frozen=True)
class Token:
    """A token record as stored (without the secret)."""

    id: str
    name: str
    role: str
    editions: tuple[str, ...]
    secret_sha256: str
    created_at: str
    revoked_at: str | None = None

    def may(self, action: str, edition: str) -> bool:
        """Is this token allowed to do `action` on `edition`?"""
        in_scope = ALL_EDITIONS in self.editions or edition in self.editions
        return in_scope and action in ROLE_ACTIONS.get(self.role, frozenset())

    def record(self) -> TokenRecord:
        """The record without the hash, for listings (flashwire.core.models.TokenRecord)."""
        return TokenRecord.model_validate(
            {
                "id": self.id,
                "name": self.name,
                "role": self.role,
                "editions": list(self.editions),
                "created_at": self.created_at,
                "revoked_at": self.revoked_at,
            }
        )


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class TokenStore:
    """Create, list, revoke and check tokens in Redis."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def create(self, *, name: str, role: str, editions: list[str]) -> tuple[str, Token]:
        """Make a token; returns the secret token string (shown once) and its record.

        The name follows the one free-text rule (flashwire/core/text.py: no terminal escapes, no
        bidi overrides), whoever creates the token; TextRuleError (a ValueError) otherwise.
        """
        name = free_text(name, max_chars=TOKEN_NAME_MAX_CHARS)
        if not name:
            raise ValueError("a token needs a name")
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        if not editions:
            raise ValueError("a token needs at least one edition (or '*')")
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(24)
        record = Token(
            id=token_id,
            name=name,
            role=role,
            editions=tuple(editions),
            secret_sha256=_digest(secret),
            created_at=iso_from_ms(now_ms()),
        )
        await self._redis.hset(self._keys.tokens, token_id, orjson.dumps(asdict(record)))
        return f"fwt_{token_id}_{secret}", record

    async def list(self) -> list[Token]:
        """Every token record, oldest first."""
        raw = await self._redis.hgetall(self._keys.tokens)
        tokens = [_load(value) for value in raw.values()]
        return sorted(tokens, key=lambda token: token.created_at)

    async def revoke(self, token_id: str) -> bool:
        """Mark a token revoked; returns False if there is no such token."""
        raw = await self._redis.hget(self._keys.tokens, token_id)
        if raw is None:
            return False
        record = orjson.loads(raw)
        record["revoked_at"] = record.get("revoked_at") or iso_from_ms(now_ms())
        await self._redis.hset(self._keys.tokens, token_id, orjson.dumps(record))
        return True

    async def authenticate(self, presented: str) -> Token | None:
        """The token record for a presented bearer token, or None if unknown or revoked."""
        if token_id(presented) is None:
            return None
        parts = presented.split("_", 2)
        raw = await self._redis.hget(self._keys.tokens, parts[1])
        if raw is None:
            # Hash anyway so that unknown ids and wrong secrets take the same time.
            hmac.compare_digest(_digest(parts[2]), _digest(""))
            return None
        token = _load(raw)
        if not hmac.compare_digest(_digest(parts[2]), token.secret_sha256):
            return None
        if token.revoked_at is not None:
            return None
        return token


def token_id(presented: str) -> str | None:
    """The id a presented token `fwt_<id>_<secret>` names (nothing checked), or None if it is not
    shaped so."""
    parts = presented.split("_", 2)
    if len(parts) != 3 or parts[0] != "fwt" or not parts[1] or not parts[2]:
        return None
    return parts[1]


def _load(raw: bytes | str) -> Token:
    data = orjson.loads(raw)
    data["editions"] = tuple(data["editions"])
    return Token(**data)
