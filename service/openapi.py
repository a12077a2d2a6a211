"""The OpenAPI 3.1 document of the newsroom API, served at /api/v1/openapi.json."""

from __future__ import annotations

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
            }
        },
        "schemas": {
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
                    "action": {"type": "string", "enum": ["post", "correct", "retract"]},
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
                    "status": {"type": "string", "enum": ["usable", "canceled"]},
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
