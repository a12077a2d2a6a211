"""Validators for one message of the AsyncAPI document, with its `$ref`s resolved inside the document."""

from __future__ import annotations

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
