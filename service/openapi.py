"""The OpenAPI 3.1 document of the newsroom API, served at /api/v1/openapi.json."""

from __future__ import annotations

import copy
from typing import Any

_ERROR = {"$ref": "#/components/responses/Error"}
_TIME = {"type": "string", "format": "date-time"}
_URGENCY = {
    "type": "string",
    "enum": ["flash", "urgent", "routine"],
    "description": "IPTC urgency: flash=1, urgent=3, routine=5",
}
_TOPICS = {
    "type": "array",
    "items": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]*$"},
    "description": "Configured section and region slugs",
}
_LINE_ID = {"name": "line_id", "in": "path", "required": True, "schema": {"type": "string"}}
_IDEMPOTENCY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "maxLength": 200},
    "description": "A retried request with the same key returns the first result.",
}


def _accepted(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}},
    }


def _body(schema: str, required: bool = True) -> dict[str, Any]:
    return {
        "required": required,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


_WRITE_ERRORS = {"401": _ERROR, "403": _ERROR, "404": _ERROR, "409": _ERROR, "413": _ERROR, "422": _ERROR}

_EDITION = {"name": "edition", "in": "path", "required": True, "schema": {"type": "string"}}


def _query(name: str, kind: str = "string") -> dict[str, Any]:
    schema = {"type": "integer"} if kind == "integer" else {"type": "string"}
    if kind == "date-time":
        schema["format"] = "date-time"
    return {"name": name, "in": "query", "required": False, "schema": schema}


def _read(
    summary: str, operation: str, schema: str, parameters: list[dict[str, Any]], *, public: bool = False
) -> dict[str, Any]:
    get: dict[str, Any] = {
        "summary": summary,
        "operationId": operation,
        "parameters": parameters,
        "responses": {
            "200": {
                "description": summary,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
            },
            "401": _ERROR,
            "403": _ERROR,
            "404": _ERROR,
        },
    }
    if public:
        get["security"] = []
        get["responses"] = {"200": get["responses"]["200"]}
    return {"get": get}


def _line_action(summary: str, operation: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    post: dict[str, Any] = {
        "summary": summary,
        "operationId": operation,
        "parameters": [_LINE_ID, _IDEMPOTENCY],
        "responses": {"201": _accepted("Accepted into the desk stream"), **_WRITE_ERRORS},
    }
    if body is not None:
        post["requestBody"] = body
    return {"post": post}


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Flashwire newsroom API",
        "version": "1",
        "description": "Post, correct and retract breaking lines. Readers use the WebSocket "
        "protocol in docs/protocol.md. Every write answers 201 once the action "
        "is in the desk stream; readers get it within milliseconds after.",
    },
    "servers": [{"url": "/"}],
    "security": [{"bearer": []}],
    "paths": {
        "/api/v1/lines": {
            "post": {
                "summary": "Post a new line",
                "operationId": "postLine",
                "parameters": [_IDEMPOTENCY],
                "requestBody": _body("NewLine"),
                "responses": {"201": _accepted("Accepted into the desk stream"), **_WRITE_ERRORS},
            },
        },
        "/api/v1/lines/{line_id}": {
            "get": {
                "summary": "A line with its version history",
                "operationId": "getLine",
                "parameters": [_LINE_ID],
                "responses": {
                    "200": {
                        "description": "The line",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/LineWithHistory"}}
                        },
                    },
                    "401": _ERROR,
                    "403": _ERROR,
                    "404": _ERROR,
                },
            },
        },
        "/api/v1/lines/{line_id}/corrections": {
            "post": {
                "summary": "Correct a line (new version, same id)",
                "operationId": "correctLine",
                "parameters": [_LINE_ID, _IDEMPOTENCY],
                "requestBody": _body("Correction"),
                "responses": {"201": _accepted("Correction accepted"), **_WRITE_ERRORS},
            },
        },
        "/api/v1/lines/{line_id}/retraction": {
            "post": {
                "summary": "Retract (kill) a line; chief editors and admins only",
                "operationId": "retractLine",
                "parameters": [_LINE_ID, _IDEMPOTENCY],
                "requestBody": _body("Retraction", False),
                "responses": {"201": _accepted("Retraction accepted"), **_WRITE_ERRORS},
            },
        },
        "/api/v1/editions/{edition}/lines": {
            "get": {
                "summary": "The live lines of an edition, newest first",
                "operationId": "liveLines",
                "parameters": [
                    {"name": "edition", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": {
                        "description": "Live lines and the ticker cursor they stand at",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/LiveLines"}}
                        },
                    },
                    "401": _ERROR,
                    "403": _ERROR,
                    "404": _ERROR,
                },
            },
        },
        "/api/v1/lines/{line_id}/pin": _line_action(
            "Pin a live line to the top of its edition (chief)", "pinLine"
        ),
        "/api/v1/lines/{line_id}/unpin": _line_action("Unpin a line (chief)", "unpinLine"),
        "/api/v1/lines/{line_id}/expiry": _line_action(
            "Extend or shorten a line's expiry (shortening needs the retract permission)",
            "setExpiry",
            _body("Expiry"),
        ),
        "/api/v1/lines/{line_id}/cancellation": _line_action(
            "Cancel a scheduled (embargoed) line before its release time (chief); 409 after it",
            "cancelScheduled",
        ),
        "/api/v1/editions/{edition}/scheduled": _read(
            "Embargoed lines of an edition, soonest first", "scheduled", "LiveLines", [_EDITION]
        ),
        "/api/v1/audit": _read(
            "The audit trail, newest first",
            "listAudit",
            "AuditPage",
            [
                _query("edition"),
                _query("editor"),
                _query("action"),
                _query("from", "date-time"),
                _query("to", "date-time"),
                _query("limit", "integer"),
                _query("before"),
            ],
        ),
        "/api/v1/audit/export": {
            "get": {
                "summary": "Export the audit trail (oldest first) as CSV or JSON lines",
                "operationId": "exportAudit",
                "parameters": [
                    _query("format"),
                    _query("edition"),
                    _query("editor"),
                    _query("action"),
                    _query("from", "date-time"),
                    _query("to", "date-time"),
                ],
                "responses": {
                    "200": {
                        "description": "A download",
                        "content": {"text/csv": {}, "application/x-ndjson": {}},
                    },
                    "401": _ERROR,
                    "403": _ERROR,
                    "422": _ERROR,
                },
            }
        },
        "/api/v1/me": _read("The presented token: name, role, editions, permitted actions", "me", "Me", []),
        "/api/v1/config": _read("Editions, topics and limits", "config", "Config", [], public=True),
        "/api/v1/tokens": {
            **_read("Every token (admin)", "listTokens", "TokenList", []),
            "post": {
                "summary": "Create a token (admin; an admin of some editions may grant only those, "
                "and no admin role); the secret is in the response only",
                "operationId": "createToken",
                "requestBody": _body("NewToken"),
                "responses": {
                    "201": {"description": "The new token"},
                    "401": _ERROR,
                    "403": _ERROR,
                    "422": _ERROR,
                },
            },
        },
        "/api/v1/tokens/{token_id}/revoke": {
            "post": {
                "summary": "Revoke a token (admin)",
                "operationId": "revokeToken",
                "parameters": [
                    {"name": "token_id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": {"description": "The revoked token"},
                    "401": _ERROR,
                    "403": _ERROR,
                    "404": _ERROR,
                },
            }
        },
    },
    "components": {
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "An editor token: fwt_<id>_<secret>",
            }
        },
        "responses": {
            "Error": {
                "description": "A refusal naming the field at fault",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            },
        },
        "schemas": {
            "Expiry": {
                "type": "object",
                "additionalProperties": False,
                "required": ["expires_at"],
                "properties": {"expires_at": _TIME},
            },
            "AuditEntry": {
                "type": "object",
                "properties": {
                    "audit_id": {"type": "string"},
                    "at": _TIME,
                    "actor": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "role": {"type": "string"},
                            "token": {"type": "string"},
                        },
                    },
                    "action": {"type": "string"},
                    "edition": {"type": "string"},
                    "line_id": {"type": "string"},
                    "desk_id": {"type": "string"},
                    "reason": {"type": "string"},
                    "before": {"type": ["object", "null"]},
                    "after": {"type": ["object", "null"]},
                },
            },
            "AuditPage": {
                "type": "object",
                "properties": {
                    "entries": {"type": "array", "items": {"$ref": "#/components/schemas/AuditEntry"}},
                    "next_before": {
                        "type": ["string", "null"],
                        "description": "Pass as `before` for the next page",
                    },
                },
            },
            "Me": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "name": {"type": "string"},
                    "role": {"type": "string"},
                    "editions": {"type": "array", "items": {"type": "string"}},
                    "actions": {"type": "array", "items": {"type": "string"}},
                },
            },
            "Config": {"type": "object"},
            "TokenList": {
                "type": "object",
                "properties": {"tokens": {"type": "array", "items": {"type": "object"}}},
            },
            "NewToken": {
                "type": "object",
                "required": ["name", "editions"],
                "properties": {
                    "name": {"type": "string"},
                    "role": {"type": "string", "enum": ["editor", "chief", "admin"]},
                    "editions": {"type": "array", "items": {"type": "string"}},
                },
            },
            "NewLine": {
                "type": "object",
                "additionalProperties": False,
                "required": ["edition", "text"],
                "properties": {
                    "edition": {"type": "string", "examples": ["en"]},
                    "text": {"type": "string", "minLength": 1, "maxLength": 280},
                    "urgency": {**_URGENCY, "default": "routine"},
                    "topics": _TOPICS,
                    "url": {"type": ["string", "null"], "format": "uri", "description": "http or https only"},
                    "source": {"type": ["string", "null"], "maxLength": 120},
                    "embargo_until": {
                        **_TIME,
                        "description": "Schedule the line (chief); released at this time",
                    },
                    "expires_at": {**_TIME, "description": "Default: now + FLASHWIRE_DEFAULT_TTL_S"},
                },
            },
            "Correction": {
                "type": "object",
                "additionalProperties": False,
                "minProperties": 1,
                "properties": {
                    "text": {"type": "string", "minLength": 1, "maxLength": 280},
                    "urgency": _URGENCY,
                    "topics": _TOPICS,
                    "url": {"type": ["string", "null"], "format": "uri"},
                    "source": {"type": ["string", "null"], "maxLength": 120},
                    "expires_at": _TIME,
                },
            },
            "Retraction": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"reason": {"type": "string", "maxLength": 200}},
            },
            "Accepted": {
                "type": "object",
                "required": ["action", "id", "edition", "accepted_at", "desk_id"],
                "properties": {
                    "action": {
                        "type": "string",
                        "enum": ["post", "correct", "retract", "pin", "unpin", "expiry", "cancel"],
                    },
                    "id": {"type": "string"},
                    "edition": {"type": "string"},
                    "accepted_at": _TIME,
                    "desk_id": {"type": "string", "description": "Position in the desk stream"},
                    "line": {"type": "object"},
                    "changes": {"type": "object"},
                    "reason": {"type": "string"},
                },
            },
            "Line": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "version": {"type": "integer"},
                    "edition": {"type": "string"},
                    "language": {"type": "string"},
                    "direction": {"type": "string", "enum": ["ltr", "rtl"]},
                    "text": {"type": "string"},
                    "urgency": _URGENCY,
                    "iptc_urgency": {"type": "integer", "minimum": 1, "maximum": 9},
                    "topics": _TOPICS,
                    "url": {"type": ["string", "null"]},
                    "status": {"type": "string", "enum": ["usable", "withheld", "canceled"]},
                    "source": {"type": ["string", "null"]},
                    "pinned": {"type": "boolean"},
                    "embargoed": {"type": ["string", "null"], "format": "date-time"},
                    "published_at": _TIME,
                    "updated_at": _TIME,
                    "expires_at": _TIME,
                    "author": {"type": "string"},
                    "expired": {"type": "boolean"},
                },
            },
            "LineWithHistory": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "edition": {"type": "string"},
                    "line": {"oneOf": [{"$ref": "#/components/schemas/Line"}, {"type": "null"}]},
                    "history": {"type": "array", "items": {"$ref": "#/components/schemas/Line"}},
                },
            },
            "LiveLines": {
                "type": "object",
                "properties": {
                    "edition": {"type": "string"},
                    "cursor": {"type": "string"},
                    "lines": {"type": "array", "items": {"$ref": "#/components/schemas/Line"}},
                },
            },
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["status", "code", "message"],
                        "properties": {
                            "status": {"type": "integer"},
                            "code": {"type": "string"},
                            "message": {"type": "string"},
                            "field": {"type": "string"},
                        },
                    }
                },
            },
        },
    },
}


def openapi_for(text_max_chars: int) -> dict[str, Any]:
    """The document with this deployment's text limit."""
    document = copy.deepcopy(OPENAPI)
    for name in ("NewLine", "Correction"):
        document["components"]["schemas"][name]["properties"]["text"]["maxLength"] = text_max_chars
    return document
