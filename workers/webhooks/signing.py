"""Signing one attempt of a message, per the Standard Webhooks specification (standardwebhooks.com).

The signed content is `<webhook-id>.<webhook-timestamp>.<body>` over the exact body bytes sent
(../shared/PITFALLS.md 2.1); the signature is `v1,<base64 HMAC-SHA256>`, made by the
`standardwebhooks` library. Every attempt is signed afresh with the time of that attempt (2.3:
receivers refuse timestamps more than 5 minutes off, and a retry may come hours later), from an
aware UTC datetime whose whole seconds are also the `webhook-timestamp` header (2.2: the library
once shifted non-UTC times). During a secret rotation's overlap the header carries one signature
per secret, separated by spaces (2.5), the current secret's first.
"""

from __future__ import annotations

from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

from flashwire.core.webhook_models import secret_key

USER_AGENT = "Flashwire-Webhooks/1"


def signed_headers(message_id: str, body: bytes, secrets: list[str], at: datetime) -> dict[str, str]:
    """The headers of one attempt: webhook-id, webhook-timestamp (Unix seconds of `at`, which must be
    aware), webhook-signature (one `v1,` signature per secret), Content-Type and User-Agent.
    ValueError for a naive `at`, no secret, or a secret that is not 24-64 bytes of strict base64."""
    if at.tzinfo is None:
        raise ValueError("sign with an aware datetime (datetime.now(UTC)), not a naive one")
    if not secrets:
        raise ValueError("an endpoint has at least one signing secret")
    seconds = int(at.timestamp())
    when = datetime.fromtimestamp(seconds, tz=UTC)
    # The key bytes, checked strictly: the library's own decoding would accept a damaged secret.
    signatures = [Webhook(secret_key(secret)).sign(message_id, when, body) for secret in secrets]
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(seconds),
        "webhook-signature": " ".join(signatures),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }
