"""Which ticker events become pushes, and the alert each one is.

- a `line` event (a publication, an embargo lifting) is pushed to the edition's registrations
  whose filter takes it: alert kind `line`;
- an `update` whose change is a correction is pushed to the targets that were sent the line
  (their push services accepted it): kind `correction`, replacing that alert;
- a `retract` with reason `killed` likewise: kind `withdrawal`, replacing the alert with a notice;
- nothing else (pins, expiry changes, a line expiring: the alert simply ages out with its TTL).

A line is pushed until FLASHWIRE_PUSH_DEADLINE_S after the desk accepted it (a worker back from
an hour's outage does not wake readers with old news); the push services keep an alert at most
FLASHWIRE_PUSH_TTL_S, and never past the line's expiry.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import orjson

from flashwire.core.clock import ms_from_iso
from flashwire.core.settings import Settings
from flashwire.workers.push.base import PAYLOAD_MAX_BYTES, Alert, AlertKind
from flashwire.workers.push.words import words_for

Audience = Literal["subscribers", "pushed"]
# What the platforms add around the payload (APNs' `aps`, FCM's strings): kept free below the limit.
PLATFORM_OVERHEAD_BYTES = 400


@dataclass(frozen=True)
class PlannedAlert:
    """An alert and who gets it: the edition's `subscribers` (filtered by each registration), or
    the targets a line was `pushed` to. `accepted_ms`: when the desk accepted this version;
    `deadline_ms`: after it, nothing more is sent."""

    alert: Alert
    audience: Audience
    topics: tuple[str, ...]
    accepted_ms: int
    deadline_ms: int

    def job_args(self) -> dict[str, Any]:
        """What a fan-out job is given (arq pickles it): plain values only."""
        return {
            "alert": asdict(self.alert),
            "topics": list(self.topics),
            "accepted_ms": self.accepted_ms,
            "deadline_ms": self.deadline_ms,
        }

    @classmethod
    def from_job_args(cls, args: dict[str, Any], audience: Audience = "subscribers") -> PlannedAlert:
        return cls(
            alert=Alert(**args["alert"]),
            audience=audience,
            topics=tuple(args["topics"]),
            accepted_ms=int(args["accepted_ms"]),
            deadline_ms=int(args["deadline_ms"]),
        )


def plan_alert(
    edition: str, cursor: str, fields: dict[bytes, bytes], settings: Settings
) -> PlannedAlert | None:
    """The alert a ticker entry (fields `t` = type, `d` = JSON body) makes, or None."""
    event_type = fields.get(b"t", b"").decode()
    try:
        data: dict[str, Any] = orjson.loads(fields.get(b"d", b"{}"))
    except orjson.JSONDecodeError:
        return None
    line = data.get("line")
    if not isinstance(line, dict) or "id" not in line:
        return None
    if event_type == "line":
        kind, audience = "line", "subscribers"
    elif event_type == "update" and data.get("change") == "correction":
        kind, audience = "correction", "pushed"
    elif event_type == "retract" and data.get("reason") == "killed":
        kind, audience = "withdrawal", "pushed"
    else:
        return None
    return planned_for_line(edition, cursor, line, kind, str(data.get("note") or ""), settings, audience)  # type: ignore[arg-type]


def planned_for_line(
    edition: str,
    cursor: str,
    line: dict[str, Any],
    kind: AlertKind,
    note: str,
    settings: Settings,
    audience: Audience,
) -> PlannedAlert:
    """The alert of `kind` about a line document (as stored and sent to readers), with its audience
    and deadline. A payload that would not fit the platforms' limits leaves out the url (the app
    can fetch the line by id): base.PAYLOAD_MAX_BYTES."""
    language = str(line.get("language") or edition)
    words = words_for(language)
    urgency = str(line.get("urgency", "routine"))
    accepted_ms = ms_from_iso(line["updated_at"]) if "updated_at" in line else 0
    ttl_end_ms = accepted_ms + settings.push_ttl_s * 1000
    expires_ms = (
        ms_from_iso(line["expires_at"]) if kind != "withdrawal" and "expires_at" in line else ttl_end_ms
    )
    if kind == "line":
        title = words.get(urgency, words["flash"])
        text = str(line.get("text", ""))
    elif kind == "correction":
        title, text = words["correction"], str(line.get("text", ""))
    else:
        title, text = words["withdrawn"], note or words["withdrawn_text"]
    alert = Alert(
        kind=kind,
        line_id=str(line["id"]),
        version=int(line.get("version", 1)),
        edition=edition,
        language=language,
        direction=str(line.get("direction") or settings.direction(edition)),
        title=str(title),
        text=text,
        url=line.get("url") if kind != "withdrawal" else None,
        cursor=cursor,
        urgency=urgency,
        expires_at_s=min(expires_ms, ttl_end_ms) // 1000,
    )
    if len(orjson.dumps(alert.payload())) > PAYLOAD_MAX_BYTES - PLATFORM_OVERHEAD_BYTES:
        alert = replace(alert, url=None)
    return PlannedAlert(
        alert=alert,
        audience=audience,
        topics=tuple(line.get("topics") or ()),
        accepted_ms=accepted_ms,
        deadline_ms=accepted_ms + settings.push_deadline_s * 1000,
    )
