"""Validators for one message of the AsyncAPI document, with its `$ref`s resolved inside the document.

The served document is open, as the protocol is (docs/protocol.md 1: ignore fields you do not know).
A test that checks real frames wants the opposite: a frame carrying a field its schema does not
list has drifted from its description. `closed` makes that strict variant of a document.
"""

from __future__ import annotations

import copy
from typing import Any

from jsonschema import Draft7Validator
from referencing import Registry
from referencing.jsonschema import DRAFT7

DOCUMENT_URI = "urn:flashwire:asyncapi"


def payload_validator(document: dict[str, Any], message: str) -> Draft7Validator:
    """A draft-07 validator (AsyncAPI's default schema format) for the payload of `message`."""
    registry: Registry[Any] = Registry().with_resource(DOCUMENT_URI, DRAFT7.create_resource(document))
    schema = {"$ref": f"{DOCUMENT_URI}#/components/messages/{message}/payload"}
    return Draft7Validator(schema, registry=registry)


def _close(schema: object) -> None:
    """Refuse unlisted fields in every object schema with `properties`, at any depth."""
    if isinstance(schema, dict):
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        for value in schema.values():
            _close(value)
    elif isinstance(schema, list):
        for value in schema:
            _close(value)


def closed(document: dict[str, Any]) -> dict[str, Any]:
    """A copy of `document` whose component schemas refuse every field they do not list: the
    messages, the line inside them, and every object nested in either."""
    strict = copy.deepcopy(document)
    _close(strict["components"]["schemas"])
    return strict
