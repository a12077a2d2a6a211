"""The OpenAPI 3.1 document of every HTTP route, generated from the models and the settings.

Schemas come from the pydantic models of flashwire/core/models.py (JSON Schema 2020-12, which
OpenAPI 3.1 uses as is); the request models are those bound to the running configuration
(`request_models(settings)`), so editions, topics and limits in the document are the configured
ones. Nothing about a field is written here: this module only says which model each operation
takes and answers with, and documents the routes that are not JSON (feeds, /sse, pages).
Served at /api/v1/openapi.json; tests/test_openapi.py checks it covers every route of the app.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from flashwire.core.cursors import CURSOR_PATTERN
from flashwire.core.models import (
    IDEMPOTENCY_KEY_ADAPTER,
    INSTANT_RANGE,
    SCHEDULED_LIST_MAX,
    ActionAccepted,
    AuditPage,
    Config,
    CorrectionAccepted,
    CreatedToken,
    EditionLines,
    EditionReaders,
    ErrorBody,
    ExpiryAccepted,
    Health,
    LineDetail,
    Me,
    PostAccepted,
    PreconditionFailedBody,
    Readiness,
    RetractionAccepted,
    ScheduledLines,
    TokenList,
    TokenRecord,
    Urgency,
    request_models,
)
from flashwire.core.push_models import (
    PushConfig,
    RegistrationCreated,
    RegistrationView,
    registration_model,
    update_model,
)
from flashwire.core.settings import Settings
from flashwire.core.webhook_models import (
    CreatedEndpoint,
    DeliveryList,
    Endpoint,
    EndpointList,
    ReplayAccepted,
    RotatedSecret,
    webhook_request_models,
)
from flashwire.service.audit import AUDIT_ACTIONS, PAGE_MAX
from flashwire.service.webhooks import DELIVERIES_PAGE_MAX

REF = "#/components/schemas/{model}"
Schema = dict[str, Any]


@dataclass(frozen=True)
class Operation:
    """One method on one path: what it takes and what it answers.

    `ok` maps a status answered otherwise than with the error body (a success, a 304, the plain
    404 of a static file) to a response model, to media types and their schemas for what is not
    JSON, or to None for no body; `errors` are the statuses answered with the error body.
    """

    method: Literal["get", "post", "put", "patch", "delete", "options"]
    path: str
    operation_id: str
    summary: str
    ok: dict[int, type[BaseModel] | dict[str, Schema] | None]
    errors: tuple[int, ...] = (401, 403, 404, 429, 503)
    body: type[BaseModel] | None = None
    body_required: bool = True
    parameters: tuple[Schema, ...] = ()
    public: bool = False
    tags: tuple[str, ...] = field(default_factory=tuple)
    headers: dict[int, dict[str, Schema]] = field(default_factory=dict)
    # The security scheme when not the editor token (and not public): "registrationSecret".
    scheme: str = "bearer"


def _param(name: str, where: str, schema: Schema, description: str, *, required: bool = False) -> Schema:
    return {"name": name, "in": where, "required": required or where == "path", "schema": schema,
            "description": description}  # fmt: skip


_STRING: Schema = {"type": "string"}
_LINE_ID = _param("line_id", "path", _STRING, "The line's id, as returned when it was posted.")
_TOKEN_ID = _param("token_id", "path", _STRING, "The token's id (the middle part of fwt_<id>_<secret>).")
_IDEMPOTENCY_SCHEMA = IDEMPOTENCY_KEY_ADAPTER.json_schema()
_IDEMPOTENCY = _param(
    "Idempotency-Key",
    "header",
    {key: value for key, value in _IDEMPOTENCY_SCHEMA.items() if key != "description"},
    _IDEMPOTENCY_SCHEMA["description"],
)
# Optimistic concurrency on every change to a line (docs/api.md, "Concurrent changes").
_IF_MATCH = _param(
    "If-Match",
    "header",
    {"type": "string", "examples": ['"v3"', "*"]},
    "Apply the change only if the line is still at this revision: its ETag from GET /api/v1/lines/{line_id} "
    '(`"v<revision>"`, the line\'s `revision`), several separated by commas, or `*` (the line exists). '
    "Compared, atomically with accepting the change, with the revision of the last change accepted; "
    "otherwise 412 with the current revision and line. Without it the change is made whatever the "
    "revision (scripts, the CLI); the desk always sends it. RFC 9110 section 13.1.1.",
)
_ETAG = {
    "ETag": {
        "description": 'The line\'s strong ETag, `"v<revision>"`, of the state in the body (RFC 9110 section '
        "8.8.3): send it as If-Match with a change. Absent while `line` is null.",
        "schema": {"type": "string", "pattern": '^"v[1-9][0-9]*"$'},
    }
}
# 429 on every operation that takes a token: FLASHWIRE_AUTH_FAILURE_RATE_LIMIT refuses an address
# that failed too often, and writes have their own limits (service/rate_limits.py).
_WRITE_ERRORS = (401, 403, 404, 409, 413, 422, 429, 503)
_HTML = {"text/html": {"type": "string"}}


def _operations(settings: Settings) -> list[Operation]:
    edition = _param("edition", "path", {"type": "string", "enum": list(settings.editions)}, "Edition code.")
    # An empty query value means the filter is not given.
    time: Schema = {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "string", "maxLength": 0}]}
    # An audit id is a stream id, so a cursor by the cursor rule; empty means the first page.
    audit_id: Schema = {"type": "string", "pattern": f"^({CURSOR_PATTERN})?$"}
    audit_filters = (
        _param("edition", "query", {"type": "string"}, "Only this edition ('*' for token changes)."),
        _param("editor", "query", _STRING, "Only actions by the token of this name."),
        _param(
            "action",
            "query",
            {"type": "string", "enum": [*sorted(AUDIT_ACTIONS), ""]},
            "Only this action; empty means any.",
        ),
        _param("from", "query", time, f"From this time (RFC 3339, within {INSTANT_RANGE} in UTC)."),
        _param("to", "query", time, f"Up to this time (RFC 3339, within {INSTANT_RANGE} in UTC)."),
    )
    urgency: Schema = {"type": "string", "enum": list(get_args(Urgency))}
    line_action = _WRITE_ERRORS

    def follow_up(
        path: str,
        op: str,
        summary: str,
        ok: type[BaseModel],
        body: type[BaseModel] | None,
        *,
        required: bool = True,
    ) -> Operation:
        return Operation(
            "post",
            f"/api/v1/lines/{{line_id}}/{path}",
            op,
            summary,
            {201: ok, 202: ok},
            (*line_action, 412),
            body,
            required,
            (_LINE_ID, _IDEMPOTENCY, _IF_MATCH),
            tags=("lines",),
        )

    models = request_models(settings)
    return [
        Operation(
            "get",
            "/",
            "demoPage",
            "The demo page: every edition's widget.",
            {200: _HTML},
            (),
            public=True,
            tags=("pages",),
        ),
        Operation(
            "get",
            "/live",
            "liveListPage",
            "The plain live list of lines.",
            {200: _HTML},
            (),
            public=True,
            tags=("pages",),
        ),
        Operation(
            "get",
            "/desk",
            "deskPage",
            "The newsroom desk page.",
            {200: _HTML},
            (),
            public=True,
            tags=("pages",),
        ),
        Operation(
            "get",
            "/flashwire-sw.js",
            "serviceWorker",
            "The site's service worker for breaking-news alerts (scope /; docs/push.md, 'The site as a"
            " web app').",
            {200: {"text/javascript": _STRING}},
            (),
            public=True,
            tags=("pages",),
        ),
        Operation(
            "get",
            "/web/{path}",
            "webAsset",
            "Static files of the pages, widget and desk.",
            {200: {"*/*": {}}, 404: {"text/plain": {"type": "string"}}},
            (),
            parameters=(_param("path", "path", _STRING, "File under web/."),),
            public=True,
            tags=("pages",),
        ),
        Operation(
            "get",
            "/healthz",
            "healthz",
            "Liveness, and whether publishing works: 200 'ok' or 'degraded', 503 'unavailable' (no Redis).",
            {200: Health, 503: Health},
            (),
            public=True,
            tags=("operations",),
        ),
        Operation(
            "get",
            "/readyz",
            "readyz",
            "Readiness to serve readers: 200 'ready', 503 'unready' with the problems.",
            {200: Readiness, 503: Readiness},
            (),
            public=True,
            tags=("operations",),
        ),
        Operation(
            "get",
            "/metrics",
            "metrics",
            "Prometheus metrics (text exposition format).",
            {200: {"text/plain": {"type": "string"}}},
            (),
            public=True,
            tags=("operations",),
        ),
        Operation(
            "get",
            "/api/v1/openapi.json",
            "openapi",
            "This document.",
            {200: {"application/json": {"type": "object"}}},
            (),
            public=True,
            tags=("api",),
        ),
        Operation(
            "get",
            "/api/v1/asyncapi.json",
            "asyncapi",
            "The reader protocol (WebSocket /ws and SSE /sse) as an AsyncAPI 3.0 document, generated"
            " from the same models (flashwire/core/protocol.py); docs/protocol.md explains it.",
            {200: {"application/json": {"type": "object"}}},
            (),
            public=True,
            tags=("api",),
        ),
        Operation(
            "get",
            "/api/v1/config",
            "config",
            "Editions, topics and limits.",
            {200: Config},
            (503,),
            public=True,
            tags=("api",),
        ),
        Operation(
            "get",
            "/api/v1/me",
            "me",
            "The presented token and what it may do.",
            {200: Me},
            (401, 429, 503),
            tags=("tokens",),
        ),
        Operation(
            "post",
            "/api/v1/lines",
            "postLine",
            "Post a new line, or schedule it with embargo_until.",
            {201: PostAccepted, 202: PostAccepted},
            _WRITE_ERRORS,
            models.post,
            parameters=(_IDEMPOTENCY,),
            tags=("lines",),
        ),
        Operation(
            "get",
            "/api/v1/lines/{line_id}",
            "getLine",
            "A line, its versions and its reach.",
            {200: LineDetail},
            parameters=(_LINE_ID,),
            tags=("lines",),
            headers={200: _ETAG},
        ),
        follow_up(
            "corrections",
            "correctLine",
            "Correct a line (version + 1).",
            CorrectionAccepted,
            models.correction,
        ),
        follow_up(
            "retraction",
            "retractLine",
            "Retract (kill) a line (chief).",
            RetractionAccepted,
            models.retraction,
            required=False,
        ),
        follow_up(
            "pin",
            "pinLine",
            "Pin a line to the top of its edition (chief).",
            ActionAccepted,
            models.empty,
            required=False,
        ),
        follow_up(
            "unpin", "unpinLine", "Unpin a line (chief).", ActionAccepted, models.empty, required=False
        ),
        follow_up(
            "expiry",
            "moveExpiry",
            "Move a line's expiry (earlier needs a chief).",
            ExpiryAccepted,
            models.expiry,
        ),
        follow_up(
            "cancellation",
            "cancelLine",
            "Cancel a scheduled line (chief).",
            ActionAccepted,
            models.empty,
            required=False,
        ),
        Operation(
            "get",
            "/api/v1/editions/{edition}/lines",
            "editionLines",
            "Live lines, pinned first then newest, with their reach.",
            {200: EditionLines},
            parameters=(edition,),
            tags=("lines",),
        ),
        Operation(
            "get",
            "/api/v1/editions/{edition}/scheduled",
            "scheduledLines",
            f"Lines waiting for their embargo, soonest first: at most {SCHEDULED_LIST_MAX}.",
            {200: ScheduledLines},
            parameters=(edition,),
            tags=("lines",),
        ),
        Operation(
            "get",
            "/api/v1/editions/{edition}/readers",
            "editionReaders",
            "Readers connected now over every node (WebSocket and SSE, desks excluded).",
            {200: EditionReaders},
            parameters=(edition,),
            tags=("lines",),
        ),
        Operation(
            "get",
            "/api/v1/audit",
            "listAudit",
            "The audit trail, newest first.",
            {200: AuditPage},
            (401, 403, 422, 429, 503),
            parameters=(
                *audit_filters,
                _param(
                    "limit", "query", {"type": "integer", "minimum": 1, "maximum": PAGE_MAX}, "Page size."
                ),
                _param("before", "query", audit_id, "`next_before` of the previous page."),
            ),
            tags=("audit",),
        ),
        Operation(
            "get",
            "/api/v1/audit/export",
            "exportAudit",
            "Matching entries, oldest first, streamed: at most `limit` (header Flashwire-Export-Limit)."
            ' The answer ends with where to go on: a last JSON line {"next_after": <audit_id or null>}'
            ' or a last CSV row starting "#next_after"; null (an empty id) means nothing further'
            " matches, and an answer without it was cut short.",
            {200: {"text/csv": {"type": "string"}, "application/x-ndjson": {"type": "string"}}},
            (401, 403, 422, 429, 503),
            parameters=(
                *audit_filters,
                _param("format", "query", {"type": "string", "enum": ["csv", "jsonl"]}, "Default jsonl."),
                _param("after", "query", audit_id, "The previous answer's `next_after`."),
                _param(
                    "limit",
                    "query",
                    {"type": "integer", "minimum": 1, "maximum": settings.audit_export_max},
                    "Most entries in this answer; default and maximum FLASHWIRE_AUDIT_EXPORT_MAX.",
                ),
            ),
            tags=("audit",),
        ),
        Operation(
            "get",
            "/api/v1/tokens",
            "listTokens",
            "The tokens this admin may manage.",
            {200: TokenList},
            (401, 403, 429, 503),
            tags=("tokens",),
        ),
        Operation(
            "post",
            "/api/v1/tokens",
            "createToken",
            "Create a token; its secret is shown once.",
            {201: CreatedToken},
            (401, 403, 413, 422, 429, 503),
            models.create_token,
            tags=("tokens",),
        ),
        Operation(
            "post",
            "/api/v1/tokens/{token_id}/revoke",
            "revokeToken",
            "Revoke a token.",
            {200: TokenRecord},
            parameters=(_TOKEN_ID,),
            tags=("tokens",),
        ),
        Operation(
            "get",
            "/sse",
            "sse",
            "The reader protocol over server-sent events (docs/protocol.md): "
            "each `data:` line is one message of the WebSocket protocol (AsyncAPI document).",
            {200: {"text/event-stream": {"type": "string"}}},
            (400, 403, 503),
            parameters=(
                _param("editions", "query", _STRING, "Comma-separated edition codes; default all."),
                _param("edition", "query", _STRING, "One edition (same as editions)."),
                _param("topics", "query", _STRING, "Comma-separated topic slugs; a line matches any."),
                _param("min_urgency", "query", urgency, "Least urgency to receive; default routine."),
                _param("since", "query", _STRING, "Resume cursors: <cursor>, or en:<cursor>,ar:<cursor>."),
                _param("Last-Event-ID", "header", _STRING, "Set by the browser on reconnection."),
            ),
            public=True,
            tags=("readers",),
        ),
        *_push_operations(settings),
        Operation(
            "get",
            "/feeds/{edition}.{format}",
            "feed",
            "The edition's live lines as a feed.",
            {
                200: {
                    "application/feed+json": {"type": "object"},
                    "application/rss+xml": {"type": "string"},
                    "application/atom+xml": {"type": "string"},
                },
                304: None,
            },
            (403, 404, 503),
            parameters=(
                edition,
                _param("format", "path", {"type": "string", "enum": ["json", "rss", "atom"]}, "Feed format."),
            ),
            public=True,
            tags=("readers",),
        ),
        *_webhook_operations(settings),
    ]


# -- partner webhooks (service/webhooks.py, docs/webhooks.md) --------------------------------------

_ENDPOINT_ID = _param(
    "endpoint_id", "path", _STRING, "The endpoint's id, as returned when it was registered."
)


def _webhook_operations(settings: Settings) -> list[Operation]:
    models = webhook_request_models(settings)
    one = (_ENDPOINT_ID,)
    change_errors = (401, 403, 404, 413, 422, 429, 503)
    return [
        Operation(
            "post",
            "/api/v1/webhooks",
            "registerWebhook",
            "Register an endpoint (partner or admin); its signing secret is shown once.",
            {201: CreatedEndpoint},
            (401, 403, 409, 413, 422, 429, 503),
            models.register,
            tags=("webhooks",),
        ),
        Operation(
            "get",
            "/api/v1/webhooks",
            "listWebhooks",
            "The caller's endpoints (an admin's: all), with their status.",
            {200: EndpointList},
            (401, 403, 429, 503),
            tags=("webhooks",),
        ),
        Operation(
            "get",
            "/api/v1/webhooks/{endpoint_id}",
            "getWebhook",
            "One endpoint: filters, status, why and since when it is disabled.",
            {200: Endpoint},
            parameters=one,
            tags=("webhooks",),
        ),
        Operation(
            "patch",
            "/api/v1/webhooks/{endpoint_id}",
            "changeWebhook",
            "Change an endpoint's URL or filters (only the fields sent).",
            {200: Endpoint},
            change_errors,
            models.update,
            parameters=one,
            tags=("webhooks",),
        ),
        Operation(
            "delete",
            "/api/v1/webhooks/{endpoint_id}",
            "deleteWebhook",
            "Delete an endpoint.",
            {204: None},
            parameters=one,
            tags=("webhooks",),
        ),
        Operation(
            "post",
            "/api/v1/webhooks/{endpoint_id}/rotate-secret",
            "rotateWebhookSecret",
            "A new signing secret (shown once); the previous one signs too during the overlap.",
            {200: RotatedSecret},
            parameters=one,
            tags=("webhooks",),
        ),
        Operation(
            "post",
            "/api/v1/webhooks/{endpoint_id}/enable",
            "enableWebhook",
            "Send to a disabled endpoint again, from the message after the one that failed.",
            {200: Endpoint},
            (401, 403, 404, 422, 429, 503),
            parameters=one,
            tags=("webhooks",),
        ),
        Operation(
            "get",
            "/api/v1/webhooks/{endpoint_id}/deliveries",
            "listWebhookDeliveries",
            "An endpoint's deliveries, newest first, with every attempt (admin).",
            {200: DeliveryList},
            (401, 403, 404, 422, 429, 503),
            parameters=(
                _ENDPOINT_ID,
                _param(
                    "limit",
                    "query",
                    {"type": "integer", "minimum": 1, "maximum": DELIVERIES_PAGE_MAX},
                    "Page size (default 50).",
                ),
                _param("before", "query", {"type": "string"}, "`next_before` of the previous page."),
            ),
            tags=("webhooks",),
        ),
        Operation(
            "post",
            "/api/v1/webhooks/{endpoint_id}/replay",
            "replayWebhookDeliveries",
            "Send one delivery again, or every delivery since a time, each with its webhook-id (admin).",
            {201: ReplayAccepted},
            change_errors,
            models.replay,
            parameters=one,
            tags=("webhooks",),
        ),
    ]


_REGISTRATION_ID = _param(
    "registration_id", "path", _STRING, "The registration's id, as returned when it was made."
)
_NO_CONTENT: dict[str, Schema] = {}


def _push_operations(settings: Settings) -> list[Operation]:
    """Push registrations (service/push_api.py, docs/push.md): anonymous, each guarded by its secret."""
    registration = registration_model(settings)
    update = update_model(settings)
    path = "/api/v1/push/registrations/{registration_id}"
    secret_errors = (401, 404, 429, 503)
    return [
        Operation("get", "/api/v1/push", "pushConfig", "The platforms pushed to and the VAPID public key.",
                  {200: PushConfig}, (503,), public=True, tags=("push",)),
        Operation("post", "/api/v1/push/registrations", "registerPush",
                  "Register a device or browser for pushes; its secret is shown once (200: the same target"
                  " registered again, with a new secret).",
                  {201: RegistrationCreated, 200: RegistrationCreated},
                  (413, 422, 429, 503), registration, public=True, tags=("push",)),
        Operation("options", "/api/v1/push/registrations", "registerPushPreflight", "CORS preflight.",
                  {204: _NO_CONTENT}, (), public=True, tags=("push",)),
        Operation("get", path, "readPushRegistration", "A registration, read with its secret.",
                  {200: RegistrationView}, secret_errors, parameters=(_REGISTRATION_ID,),
                  scheme="registrationSecret", tags=("push",)),
        Operation("put", path, "updatePushRegistration", "Replace a registration's editions, topics,"
                  " urgency, language and quiet hours.", {200: RegistrationView},
                  (401, 404, 413, 422, 429, 503), update, parameters=(_REGISTRATION_ID,),
                  scheme="registrationSecret", tags=("push",)),
        Operation("delete", path, "deletePushRegistration",
                  "Delete a registration: nothing more is pushed to it.",
                  {204: _NO_CONTENT}, secret_errors, parameters=(_REGISTRATION_ID,),
                  scheme="registrationSecret", tags=("push",)),
        Operation("options", path, "pushRegistrationPreflight", "CORS preflight.",
                  {204: _NO_CONTENT}, (), parameters=(_REGISTRATION_ID,), public=True, tags=("push",)),
    ]  # fmt: skip


def _schemas(
    operations: list[Operation],
) -> tuple[dict[tuple[type[BaseModel], JsonSchemaMode], Schema], Schema]:
    """(reference of each model in the mode it is used, component schemas)."""
    used: set[tuple[type[BaseModel], JsonSchemaMode]] = {
        (ErrorBody, "serialization"),
        (PreconditionFailedBody, "serialization"),
    }
    for op in operations:
        if op.body is not None:
            used.add((op.body, "validation"))
        used.update((ok, "serialization") for ok in op.ok.values() if isinstance(ok, type))
    ordered = sorted(used, key=lambda pair: (pair[0].__name__, pair[1]))
    refs, defs = models_json_schema(ordered, ref_template=REF)
    by_model = cast(dict[tuple[type[BaseModel], JsonSchemaMode], Schema], refs)
    return by_model, defs.get("$defs", {})


def _content(schemas: dict[str, Schema]) -> Schema:
    return {media: {"schema": schema} for media, schema in schemas.items()}


def _json(schema: Schema) -> Schema:
    return {"application/json": {"schema": schema}}


# The 202 of a desk write (docs/api.md "Replicated or not: 201 and 202").
NOT_REPLICATED = (
    "Accepted on the primary, but fewer replicas than FLASHWIRE_WAIT_REPLICAS acknowledged it in"
    " time (`replicas` says how many): it will be published, and would be lost only if the primary"
    " is lost before it replicates. Retry with the same Idempotency-Key for a new count."
)


def _operation(op: Operation, refs: dict[tuple[type[BaseModel], JsonSchemaMode], Schema]) -> Schema:
    responses: Schema = {}
    for status, ok in op.ok.items():
        if ok is None:
            responses[str(status)] = {"description": "No content" if status == 204 else "Not modified"}
        elif isinstance(ok, dict):
            description = "No such file" if status == 404 else op.summary
            responses[str(status)] = {"description": description, "content": _content(ok)}
        else:
            responses[str(status)] = {
                "description": NOT_REPLICATED if status == 202 else op.summary,
                "content": _json(refs[(ok, "serialization")]),
            }
    for status, headers in op.headers.items():
        responses[str(status)]["headers"] = copy.deepcopy(headers)
    for status in op.errors:
        name = {429: "RateLimited", 412: "PreconditionFailed"}.get(status, "Error")
        responses[str(status)] = {"$ref": f"#/components/responses/{name}"}
    operation: Schema = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": list(op.tags),
        "parameters": [copy.deepcopy(p) for p in op.parameters],
        "responses": responses,
    }
    if op.body is not None:
        operation["requestBody"] = {
            "required": op.body_required,
            "content": _json(refs[(op.body, "validation")]),
        }
    if op.public:
        operation["security"] = []
    elif op.scheme != "bearer":
        operation["security"] = [{op.scheme: []}]
    return operation


@functools.cache
def _document(settings: Settings) -> Schema:
    operations = _operations(settings)
    refs, schemas = _schemas(operations)
    paths: Schema = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method] = _operation(op, refs)
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "Flashwire",
            "version": "1",
            "description": "The newsroom API (post, correct, retract, pin, schedule lines; tokens; audit), "
            "the feeds, the /sse reader stream and the operations endpoints. Every write answers 201 once "
            "the action is in the desk stream. The reader protocol (/ws and /sse messages) is described by "
            "the AsyncAPI document and docs/protocol.md. Generated from flashwire/core/models.py.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "fwt_<id>_<secret>"},
                "registrationSecret": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "fwr_<secret>: the secret returned when the push registration was made.",
                },
            },
            "responses": {
                "Error": {
                    "description": "Refused: the body says why, and names the field at fault if one is.",
                    "content": _json(refs[(ErrorBody, "serialization")]),
                },
                "PreconditionFailed": {
                    "description": "If-Match names a revision the line is no longer at: another change "
                    "was accepted first (code `precondition_failed`, field `If-Match`). The body adds the "
                    "current `revision`, its `etag` and the `line` as last applied; nothing was changed.",
                    "content": _json(refs[(PreconditionFailedBody, "serialization")]),
                },
                "RateLimited": {
                    "description": "Over a rate limit (code `rate_limited`; the message names the limit): "
                    "failed authentications from this address (every request carrying a token is refused "
                    "until the window passes), desk actions or token changes by this token. Counted in "
                    "Redis, shared by every node; see FLASHWIRE_*_RATE_LIMIT in docs/configuration.md.",
                    "headers": {
                        "Retry-After": {
                            "description": "Whole seconds until the limit lets the next request through "
                            "(RFC 9110 section 10.2.3).",
                            "required": True,
                            "schema": {"type": "integer", "minimum": 1},
                        }
                    },
                    "content": _json(refs[(ErrorBody, "serialization")]),
                },
            },
        },
    }


def openapi_document(settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3.1 document for this configuration (a fresh copy: callers may change it)."""
    return copy.deepcopy(_document(settings))
