"""The newsroom API under /api/v1: editorial actions on lines, and reading them back.

Every write is authorised against the token's role and editions, validated
field by field, checked against the line's current state, and answered 201
only once the action is in the desk stream.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import orjson
import pydantic
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flashwire.core.clock import iso_from_ms, ms_from_iso, now_ms
from flashwire.core.keys import Keys
from flashwire.core.lines import ValidationError, parse_correction, parse_expiry, parse_post, parse_retraction
from flashwire.core.models import (
    IDEMPOTENCY_KEY_ADAPTER,
    IDEMPOTENCY_KEY_RULE,
    LINE_ADAPTER,
    SCHEDULED_LIST_MAX,
    AcceptedResponse,
    ActionAccepted,
    Actor,
    CancelAction,
    ChangesAccepted,
    CorrectAction,
    CorrectionAccepted,
    DeskAction,
    EditionLines,
    EditionReaders,
    ExpiryAccepted,
    ExpiryAction,
    Line,
    LineDetail,
    LinePreview,
    LineWithReach,
    NewLine,
    PinAction,
    PostAccepted,
    PostAction,
    PreconditionFailedBody,
    RetractAction,
    RetractionAccepted,
    ScheduledLines,
)
from flashwire.core.push_reach import current_push, read_push_reach
from flashwire.core.settings import Settings
from flashwire.service.asyncapi import asyncapi_document
from flashwire.service.desk import (
    Accepted,
    Desk,
    IdempotencyConflict,
    NotEnoughReplicas,
    StaleRevision,
    UnknownLine,
)
from flashwire.service.errors import ApiError
from flashwire.service.http import (
    LINE_ID_RE,
    authenticate,
    authorise,
    edition_param,
    invalid,
    json_body,
    model_response,
    presented_token_id,
    together,
)
from flashwire.service.hub import Hub
from flashwire.service.openapi import openapi_document
from flashwire.service.rate_limits import RateLimits
from flashwire.service.reach import read_online, read_reach
from flashwire.service.tokens import Token
from flashwire.service.write_retry import NODE_KEY, riding_failover

Idempotency = tuple[str, str, str]


def _idempotency(request: Request, token: Token, body: object) -> Idempotency | None:
    """(token id, key, fingerprint) of a request with an Idempotency-Key, else None (see `_keyed`)."""
    return _keyed(request, token.id, body)


def _keyed(request: Request, token_id: str, body: object) -> Idempotency | None:
    """(token id, key, fingerprint) of a request with an Idempotency-Key, else None.

    The fingerprint covers the method, the path and the parsed JSON body in a canonical form
    (keys sorted, no whitespace): a retry is the same request however its client library
    serialised it, and a different request under the same key is a conflict.
    """
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    try:
        IDEMPOTENCY_KEY_ADAPTER.validate_python(key)
    except pydantic.ValidationError:
        raise ApiError(422, "invalid", IDEMPOTENCY_KEY_RULE, field="Idempotency-Key") from None
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    fingerprint = hashlib.sha256(
        request.method.encode() + request.url.path.encode() + b"\n" + canonical
    ).hexdigest()
    return token_id, key, fingerprint


# RFC 9110 section 8.8.3: entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE. Ours are strong, "v<revision>".
_ENTITY_TAG = re.compile(r'(W/)?"([\x21\x23-\x7e\x80-\xff]*)"')
_OUR_TAG = re.compile(r"v([1-9][0-9]{0,17})")
IF_MATCH_RULE = (
    'If-Match must be "*" or a comma-separated list of entity tags such as "v3" (RFC 9110 section 13.1.1)'
)
IfMatch = frozenset[int] | Literal["*"]


def etag(revision: int) -> str:
    """The strong ETag of a line at `revision`, `"v<revision>"` (RFC 9110 section 8.8.3)."""
    return f'"v{revision}"'


def _if_match(request: Request) -> IfMatch | None:
    """The request's If-Match (RFC 9110 section 13.1.1): None without one, "*" for any revision,
    else the revisions it names. Matching is the strong comparison: a weak tag (W/"v3") or a tag
    that is not one of ours never matches, so a list of only such tags is answered 412. A header
    that is not a valid list of entity tags is refused 422, field `If-Match`."""
    values = request.headers.getlist("if-match")
    if not values:
        return None
    elements = [part.strip() for value in values for part in value.split(",") if part.strip()]
    if not elements:
        raise ApiError(422, "invalid", IF_MATCH_RULE, field="If-Match")
    if elements == ["*"]:
        return "*"
    revisions: set[int] = set()
    for element in elements:
        tag = _ENTITY_TAG.fullmatch(element)
        if tag is None:
            raise ApiError(422, "invalid", IF_MATCH_RULE, field="If-Match")
        ours = _OUR_TAG.fullmatch(tag.group(2))
        if tag.group(1) is None and ours is not None:
            revisions.add(int(ours.group(1)))
    return frozenset(revisions)


class PreconditionFailed(ApiError):
    """412: the change was made against a revision of the line that is no longer current. The body
    (PreconditionFailedBody) gives the current revision, its ETag and the line as last applied."""

    def __init__(self, revision: int, line: Line | None) -> None:
        super().__init__(
            412,
            "precondition_failed",
            f"the line was changed by someone else: it is now at revision {revision} "
            f"(If-Match: {etag(revision)}); check its current state and try again",
            field="If-Match",
        )
        self.revision = revision
        self.line = line

    def body(self) -> PreconditionFailedBody:
        """{"error": {…, "field": "If-Match"}, "revision": n, "etag": "\"v<n>\"", "line": …}."""
        return PreconditionFailedBody(
            error=super().body().error, revision=self.revision, etag=etag(self.revision), line=self.line
        )


def _check_if_match(if_match: IfMatch | None, revision: int, line: Line | None) -> None:
    """412 unless `if_match` allows `revision` (no If-Match, or "*", allows any)."""
    if isinstance(if_match, frozenset) and revision not in if_match:
        raise PreconditionFailed(revision, line)


def _actor(token: Token) -> Actor:
    return Actor(token=token.id, name=token.name, role=token.role)


def _accepted(accepted: Accepted) -> Response:
    """201, or 202 when fewer replicas than FLASHWIRE_WAIT_REPLICAS acknowledged the write in time: the
    action is on the primary and will be published, but would be lost with the primary before it
    replicates (docs/api.md "Replicated or not"); the body's `replicas` says how many had it."""
    body = accepted.body
    headers = {"Location": f"/api/v1/lines/{body.id}"} if body.action == "post" else {}
    if accepted.replayed:
        headers["Idempotent-Replayed"] = "true"
    status = 201 if accepted.replicated else 202
    if body.replicas is None:  # absent, not null, without WAIT
        return Response(body.model_dump_json(exclude={"replicas"}), status, headers, "application/json")
    return model_response(body, status_code=status, headers=headers)


def _no_replicas(exc: NotEnoughReplicas) -> ApiError:
    """503: the primary refuses writes while it has fewer replicas than its `min-replicas-to-write`;
    nothing was recorded, and the same request (same Idempotency-Key) may be sent again."""
    message = "the store has too few replicas to accept writes; nothing was recorded, retry shortly"
    return ApiError(503, "unavailable", message, headers={"Retry-After": "1"})


async def _submit(
    request: Request,
    action: DeskAction,
    response: AcceptedResponse,
    idempotency: Idempotency | None,
    if_match: IfMatch | None = None,
) -> Response:
    desk: Desk = request.app.state.desk
    try:
        node_key = request.scope.get(NODE_KEY)  # service/write_retry.py
        accepted = await desk.submit(
            action, response, idempotency=idempotency, if_match=if_match, node_key=node_key
        )
    except IdempotencyConflict as exc:
        raise ApiError(409, "conflict", str(exc), field="Idempotency-Key") from None
    except StaleRevision as exc:
        raise PreconditionFailed(exc.revision, await _current_line(request, action.id)) from None
    except UnknownLine:
        raise ApiError(404, "not_found", f"no line {action.id!r}", field="id") from None
    except NotEnoughReplicas as exc:
        raise _no_replicas(exc) from None
    return _accepted(accepted)


async def _replay(
    desk: Desk,
    idempotency: Idempotency | None,
    looked_up: tuple[Idempotency | None, bytes | None] = (None, None),
) -> Response | None:
    """The first answer to a retried request, before anything is validated again: a retry gets
    what the first attempt got, even if (say) its expiry time has passed since. `looked_up` is
    (idempotency, stored answer) when the answer was read already, beside the token (`_arrival`)."""
    try:
        if idempotency is not None and looked_up[0] == idempotency:
            earlier = await desk.replay_of(idempotency, looked_up[1])
        else:
            earlier = await desk.replayed(idempotency)
    except IdempotencyConflict as exc:
        raise ApiError(409, "conflict", str(exc), field="Idempotency-Key") from None
    except NotEnoughReplicas as exc:
        raise _no_replicas(exc) from None
    return None if earlier is None else _accepted(earlier)


async def _count_desk_action(request: Request, token: Token) -> None:
    """Count one desk action of the token against FLASHWIRE_POST_RATE_LIMIT, shared by every node:
    429 with Retry-After over it (service/rate_limits.py). Called once the token is known to be
    allowed the action where it is aimed (its edition, its line) and the request is known not to
    be the replay of an answered Idempotency-Key, before the body is validated: a 401, 403 or 404
    costs nothing, while a 409, 412 or 422 counts, since it cost the same work (docs/api.md, "Rate
    limits")."""
    limits: RateLimits = request.app.state.rate_limits
    await limits.hit(limits.desk_actions, token.id)


async def _arrival(request: Request) -> tuple[Token, Any, Idempotency | None, Response | None]:
    """A post's token, JSON body, idempotency and, for a retry, its first answer, with the stored
    answer read in the token's round trip (issue 14): the body is read first and the key taken as
    the presented token's, and what is refused is refused in the order it always was (the
    credentials, then the body, then the Idempotency-Key); a lookup made for a request then
    refused is not used."""
    desk: Desk = request.app.state.desk
    try:
        body, _ = await json_body(request)
    except ApiError as refused:
        await authenticate(request)
        raise refused from None
    guessed: Idempotency | None = None
    presented = presented_token_id(request)
    if presented is not None:
        with contextlib.suppress(ApiError):  # refused below, once the token is checked
            guessed = _keyed(request, presented, body)
    if guessed is None:
        token, stored = await authenticate(request), None
    else:
        token, stored = await together(authenticate(request), desk.stored_answer(guessed))
    idempotency = _idempotency(request, token, body)
    return token, body, idempotency, await _replay(desk, idempotency, (guessed, stored))


async def post_line(request: Request) -> Response:
    """POST /api/v1/lines: publish a new line, or schedule it with `embargo_until`.

    The token is authorised on the body's `edition` (and for `schedule` when it sends an
    `embargo_until`) before the post is counted and validated, as a follow-up is on its line's
    edition; a body with no configured edition is refused 422 by the validation, uncounted.
    """
    settings: Settings = request.app.state.settings
    token, body, idempotency, earlier = await _arrival(request)
    if earlier is not None:
        return earlier
    edition = body.get("edition") if isinstance(body, dict) else None
    if isinstance(edition, str) and edition in settings.editions:
        authorise(token, "post", edition)
        if isinstance(body, dict) and body.get("embargo_until") is not None:
            authorise(token, "schedule", edition)
        await _count_desk_action(request, token)
    try:
        post = parse_post(body, settings)
    except ValidationError as exc:
        raise invalid(exc) from None
    # The validation accepts only a configured edition: the one authorised and counted above.
    authorise(token, "post", post.edition)
    if post.embargo_until_ms is not None:
        authorise(token, "schedule", post.edition)
    line_id = f"{post.edition}-{secrets.token_hex(8)}"
    at = now_ms()
    line = NewLine(
        text=post.text,
        urgency=post.urgency,
        topics=list(post.topics),
        url=post.url,
        source=post.source,
        expires_at_ms=post.expires_at_ms,
        embargo_until_ms=post.embargo_until_ms,
    )
    action = PostAction(id=line_id, edition=post.edition, at=at, by=_actor(token), line=line)
    preview = LinePreview(
        id=line_id,
        edition=post.edition,
        text=line.text,
        urgency=line.urgency,
        topics=line.topics,
        url=line.url,
        source=line.source,
        expires_at=iso_from_ms(post.expires_at_ms),
        embargoed=iso_from_ms(post.embargo_until_ms) if post.embargo_until_ms else None,
    )
    response = PostAccepted(
        id=line_id,
        edition=post.edition,
        accepted_at=iso_from_ms(at),
        scheduled=post.embargo_until_ms is not None,
        line=preview,
    )
    return await _submit(request, action, response, idempotency)


# What each follow-up action requires of the line's current state, and the refusal otherwise.
def _state_error(action: str, line: Line) -> str | None:
    if line.status == "canceled":
        return "the line was retracted" if line.embargoed is None else "the scheduled line was cancelled"
    if line.expired:
        return "the line has expired"
    if action == "cancel" and line.status != "withheld":
        return "only a scheduled line can be cancelled; retract a published one"
    if action == "cancel" and line.embargoed and ms_from_iso(line.embargoed) <= now_ms():
        return "the line's release time has passed: it is being published; retract it instead"
    if action in {"retract", "pin", "unpin"} and line.status != "usable":
        return "the line is scheduled and not yet published; cancel it instead"
    if action == "pin" and line.pinned:
        return "the line is already pinned"
    if action == "unpin" and not line.pinned:
        return "the line is not pinned"
    return None


def _check_expiry_change(token: Token, new_ms: int | None, line: Line) -> None:
    """Bringing a line's expiry forward removes it from readers sooner: a kill by another name,
    so it takes the right to retract. Extending it is an editor's call."""
    if new_ms is None or token.may("retract", line.edition):
        return
    if new_ms < ms_from_iso(line.expires_at):
        raise ApiError(
            403,
            "forbidden",
            "shortening a line's expiry removes it sooner; it needs a chief editor",
            field="expires_at",
        )


# A follow-up's body, validated: (the desk action, the 201 answer, the new expiry in ms if any).
Planned = tuple[DeskAction, AcceptedResponse, int | None]
Planner = Callable[[object, Settings, str, str, Actor, int], Planned]


def _plan_correct(
    body: object, settings: Settings, line_id: str, edition: str, by: Actor, at: int
) -> Planned:
    changes = parse_correction(body, settings)
    sent = changes.model_dump()  # the fields sent, and only those
    expires_ms: int | None = sent.pop("expires_at_ms", None)
    if expires_ms is not None:
        sent["expires_at"] = iso_from_ms(expires_ms)
    action = CorrectAction(id=line_id, edition=edition, at=at, by=by, changes=changes)
    accepted = CorrectionAccepted(
        id=line_id, edition=edition, accepted_at=iso_from_ms(at), changes=ChangesAccepted.model_validate(sent)
    )
    return action, accepted, expires_ms


def _plan_retract(
    body: object, settings: Settings, line_id: str, edition: str, by: Actor, at: int
) -> Planned:
    reason = parse_retraction(body)
    action = RetractAction(id=line_id, edition=edition, at=at, by=by, reason=reason)
    return (
        action,
        RetractionAccepted(id=line_id, edition=edition, accepted_at=iso_from_ms(at), reason=reason),
        None,
    )


def _plan_expiry(body: object, settings: Settings, line_id: str, edition: str, by: Actor, at: int) -> Planned:
    expires_ms = parse_expiry(body)
    action = ExpiryAction(id=line_id, edition=edition, at=at, by=by, expires_at_ms=expires_ms)
    accepted = ExpiryAccepted(
        id=line_id, edition=edition, accepted_at=iso_from_ms(at), expires_at=iso_from_ms(expires_ms)
    )
    return action, accepted, expires_ms


def _plain(name: Literal["pin", "unpin", "cancel"]) -> Planner:
    """Pin, unpin, cancel: no body (or an empty object)."""

    def plan(body: object, settings: Settings, line_id: str, edition: str, by: Actor, at: int) -> Planned:
        if body not in (None, {}):
            raise ValidationError("body", "this action takes no body")
        action: DeskAction = (
            CancelAction(id=line_id, edition=edition, at=at, by=by)
            if name == "cancel"
            else PinAction(action=name, id=line_id, edition=edition, at=at, by=by)
        )
        return (
            action,
            ActionAccepted(action=name, id=line_id, edition=edition, accepted_at=iso_from_ms(at)),
            None,
        )

    return plan


# action name -> (permission, body planner, body optional)
_FOLLOW_UPS: dict[str, tuple[str, Planner, bool]] = {
    "correct": ("correct", _plan_correct, False),
    "retract": ("retract", _plan_retract, True),
    "pin": ("pin", _plain("pin"), True),
    "unpin": ("pin", _plain("unpin"), True),
    "expiry": ("expiry", _plan_expiry, False),
    "cancel": ("schedule", _plain("cancel"), True),
}


def _follow_up(action_name: str) -> Callable[[Request], Awaitable[Response]]:
    permission, plan, optional = _FOLLOW_UPS[action_name]

    async def endpoint(request: Request) -> Response:
        desk: Desk = request.app.state.desk
        settings: Settings = request.app.state.settings
        token, line_id, edition = await _line_for(request, permission)
        body, _ = await json_body(request, optional=optional)
        idempotency = _idempotency(request, token, body)
        earlier = await _replay(desk, idempotency)
        if earlier is not None:
            return earlier
        await _count_desk_action(request, token)
        if_match = _if_match(request)
        try:
            action, accepted, new_expiry_ms = plan(body, settings, line_id, edition, _actor(token), now_ms())
        except ValidationError as exc:
            raise invalid(exc) from None
        current, revision = await together(_current_line(request, line_id), desk.revision(line_id))
        # A change made against an old revision is told so before any refusal by state (the line may
        # have been retracted meanwhile: the 412 shows it); desk.submit checks it again atomically.
        _check_if_match(if_match, revision, current)
        refusal = _state_error(action_name, current) if current is not None else None
        if refusal is not None:
            raise ApiError(409, "conflict", refusal, field="id")
        if current is not None:
            _check_expiry_change(token, new_expiry_ms, current)
        return await _submit(request, action, accepted, idempotency, if_match)

    endpoint.__name__ = f"{action_name}_line"
    endpoint.__doc__ = f"POST a {action_name} action for one line."
    return endpoint


async def _line_for(request: Request, permission: str) -> tuple[Token, str, str]:
    """The caller's token, the {line_id} of the path and its edition: 401, 404 or 403 otherwise."""
    desk: Desk = request.app.state.desk
    line_id = str(request.path_params["line_id"])
    # The line's edition is read in the token's round trip, and looked at only once the token is.
    edition = None
    if LINE_ID_RE.match(line_id):
        token, edition = await together(authenticate(request), desk.line_edition(line_id))
    else:
        token = await authenticate(request)
    if edition is None:
        raise ApiError(404, "not_found", f"no line {line_id!r}", field="id")
    authorise(token, permission, edition)
    return token, line_id, edition


async def _current_line(request: Request, line_id: str) -> Line | None:
    keys: Keys = request.app.state.keys
    raw = await request.app.state.redis.get(keys.line(line_id))
    return None if raw is None else LINE_ADAPTER.validate_json(raw)


async def _with_reach(request: Request, lines: list[Line]) -> list[LineWithReach]:
    """Each line with the reach of its current version (None before any delivery is counted)."""
    redis, keys = request.app.state.redis, request.app.state.keys
    ids = [line.id for line in lines]
    reaches, pushes = await read_reach(redis, keys, ids), await read_push_reach(redis, keys, ids)
    out = []
    for line, reach, push in zip(lines, reaches, pushes, strict=True):
        pushed = current_push(push, line.version)
        out.append(LineWithReach(**line.model_dump(), reach=reach.get(line.version), push=pushed))
    return out


async def live_lines(request: Request) -> Response:
    """GET /api/v1/editions/{edition}/lines: live lines (pinned first, then newest) with their reach."""
    hub: Hub = request.app.state.hub
    token = await authenticate(request)
    edition = edition_param(request)
    authorise(token, "read", edition)
    cursor, docs = await hub.snapshot(edition)
    lines = [LINE_ADAPTER.validate_python(doc) for doc in docs]
    return model_response(
        EditionLines(edition=edition, cursor=cursor, lines=await _with_reach(request, lines))
    )


async def edition_readers(request: Request) -> Response:
    """GET /api/v1/editions/{edition}/readers: readers connected now over every node, desks excluded
    (service/reach.py `read_online`); token with `read` on the edition."""
    token = await authenticate(request)
    edition = edition_param(request)
    authorise(token, "read", edition)
    readers, nodes = await read_online(request.app.state.redis, request.app.state.keys, edition)
    return model_response(
        EditionReaders(edition=edition, readers=readers, nodes=nodes, at=iso_from_ms(now_ms()))
    )


async def scheduled_lines(request: Request) -> Response:
    """GET /api/v1/editions/{edition}/scheduled: embargoed lines, soonest first (SCHEDULED_LIST_MAX)."""
    token = await authenticate(request)
    edition = edition_param(request)
    authorise(token, "read", edition)
    redis, keys = request.app.state.redis, request.app.state.keys
    ids = await redis.zrange(keys.scheduled(edition), 0, SCHEDULED_LIST_MAX - 1)
    docs = await redis.mget([keys.line(i.decode()) for i in ids]) if ids else []
    lines = [LINE_ADAPTER.validate_json(doc) for doc in docs if doc is not None]
    return model_response(
        ScheduledLines(edition=edition, lines=[line for line in lines if line.status == "withheld"])
    )


async def get_line(request: Request) -> Response:
    """GET /api/v1/lines/{id}: the line's current state, every version, and reach per version.

    With the line's strong ETag `"v<revision>"` (RFC 9110 section 8.8.3) of the state shown, the
    If-Match to send with a change made after looking at it; none in the few milliseconds before
    the worker applies a new post (`line` null)."""
    _, line_id, edition = await _line_for(request, "read")
    redis, keys = request.app.state.redis, request.app.state.keys
    current, history = await redis.get(keys.line(line_id)), await redis.lrange(keys.history(line_id), 0, -1)
    [reach] = await read_reach(redis, keys, [line_id])
    [push] = await read_push_reach(redis, keys, [line_id])
    line = LINE_ADAPTER.validate_json(current) if current else None
    detail = LineDetail(
        id=line_id,
        edition=edition,
        line=line,
        history=[LINE_ADAPTER.validate_json(version) for version in history],
        reach={str(version): value for version, value in sorted(reach.items())},
        push={f"{version}:{kind}": value for (version, kind), value in sorted(push.items())},
    )
    return model_response(detail, headers={"ETag": etag(line.revision)} if line else None)


async def openapi(request: Request) -> Response:
    """GET /api/v1/openapi.json: generated from the models and the settings (service/openapi.py)."""
    settings: Settings = request.app.state.settings
    return JSONResponse(openapi_document(settings))


async def asyncapi(request: Request) -> Response:
    """GET /api/v1/asyncapi.json: the reader protocol, generated from its models (service/asyncapi.py)."""
    settings: Settings = request.app.state.settings
    return JSONResponse(asyncapi_document(settings))


routes = [
    Route("/api/v1/asyncapi.json", asyncapi, methods=["GET"]),
    Route("/api/v1/openapi.json", openapi, methods=["GET"]),
    Route("/api/v1/lines", riding_failover(post_line), methods=["POST"]),
    Route("/api/v1/lines/{line_id}", get_line, methods=["GET"]),
    Route("/api/v1/lines/{line_id}/corrections", riding_failover(_follow_up("correct")), methods=["POST"]),
    Route("/api/v1/lines/{line_id}/retraction", riding_failover(_follow_up("retract")), methods=["POST"]),
    Route("/api/v1/lines/{line_id}/pin", riding_failover(_follow_up("pin")), methods=["POST"]),
    Route("/api/v1/lines/{line_id}/unpin", riding_failover(_follow_up("unpin")), methods=["POST"]),
    Route("/api/v1/lines/{line_id}/expiry", riding_failover(_follow_up("expiry")), methods=["POST"]),
    Route("/api/v1/lines/{line_id}/cancellation", riding_failover(_follow_up("cancel")), methods=["POST"]),
    Route("/api/v1/editions/{edition}/lines", live_lines, methods=["GET"]),
    Route("/api/v1/editions/{edition}/scheduled", scheduled_lines, methods=["GET"]),
    Route("/api/v1/editions/{edition}/readers", edition_readers, methods=["GET"]),
]
