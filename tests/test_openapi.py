"""The OpenAPI document: generated from the models and the settings, valid, and covering every route.

Drift between the document and the service is what issue 9 found (no `scheduled`, no `reach`,
limits copied by hand); these tests make each kind of drift fail: a route the app serves but the
document lacks, a schema that misses a field the models have, a limit that is not the configured one.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry
from referencing.jsonschema import DRAFT202012
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route

from flashwire.core.cursors import is_cursor
from flashwire.core.models import IDEMPOTENCY_KEY_ADAPTER, SCHEDULED_LIST_MAX
from flashwire.core.settings import Settings
from flashwire.service.app import create_app
from flashwire.service.audit import PAGE_MAX
from flashwire.service.openapi import openapi_document
from tests.conftest import InProcessApp


def _starlette(app: Any) -> Starlette:
    """The Starlette router under the ASGI layers create_app wraps it in (/ws dispatch, logging)."""
    while not isinstance(app, Starlette):
        app = app.app
    return app


def _served(routes: list[BaseRoute]) -> set[tuple[str, str]]:
    """(OpenAPI path, method) of every HTTP route; a Mount of files is one `{path}` route."""
    served: set[tuple[str, str]] = set()
    for route in routes:
        if isinstance(route, Route):
            served |= {(route.path, method.lower()) for method in route.methods or () if method != "HEAD"}
        elif isinstance(route, Mount):
            served.add((f"{route.path}/{{path}}", "get"))
        else:
            raise AssertionError(f"a route the document cannot describe: {route!r}")
    return served


def _schema(doc: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    name = ref["$ref"].rsplit("/", 1)[1]
    schema: dict[str, Any] = doc["components"]["schemas"][name]
    return schema


def _json_schema(doc: dict[str, Any], path: str, method: str, status: str) -> dict[str, Any]:
    return _schema(
        doc, doc["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
    )


async def test_the_served_document_is_valid_openapi_3_1(app: InProcessApp) -> None:
    """GET /api/v1/openapi.json is the generated document for the app's settings, and validates."""
    response = await app.client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    assert doc == openapi_document(app.settings)
    assert doc["openapi"] == "3.1.0"
    # Off the event loop: validation takes seconds on a loaded machine, and the app's own tasks
    # (the hub's reader, its Redis timeouts) share this loop until the lifespan ends.
    await asyncio.to_thread(validate, doc)


def test_every_route_of_the_app_is_documented_with_its_methods() -> None:
    """Walk the app's routes (API, tokens, audit, feeds, health, /sse, pages, static files): each
    path and method is in the document, and the document lists nothing the app does not serve."""
    settings = Settings()
    served = _served(_starlette(create_app(settings)).routes)
    assert ("/sse", "get") in served and ("/feeds/{edition}.{format}", "get") in served
    doc = openapi_document(settings)
    documented = {(path, method) for path, item in doc["paths"].items() for method in item}
    assert served - documented == set(), "served but not documented"
    assert documented - served == set(), "documented but not served"
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            names = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
            assert names == {
                part.strip("{}") for part in path.replace(".", "/").split("/") if part.startswith("{")
            }, (
                path,
                method,
            )


def test_the_sse_handshake_documents_its_query_parameters() -> None:
    """/sse: the subscription's query parameters and Last-Event-ID, and its event-stream answer."""
    operation = openapi_document(Settings())["paths"]["/sse"]["get"]
    names = {(p["in"], p["name"]) for p in operation["parameters"]}
    expected = {("query", name) for name in ("editions", "edition", "topics", "min_urgency", "since")}
    assert names == expected | {("header", "Last-Event-ID")}
    assert "text/event-stream" in operation["responses"]["200"]["content"]


def test_schemas_carry_every_field_the_models_have() -> None:
    """Issue 9's drift: the post knows `embargo_until`, its answer `scheduled`, edition lines `reach`."""
    doc = openapi_document(Settings())
    post = doc["paths"]["/api/v1/lines"]["post"]
    request = _schema(doc, post["requestBody"]["content"]["application/json"]["schema"])
    assert {"embargo_until", "expires_at", "text", "source", "url", "topics"} <= set(request["properties"])
    assert request["additionalProperties"] is False
    accepted = _json_schema(doc, "/api/v1/lines", "post", "201")
    assert "scheduled" in accepted["required"]
    lines = _json_schema(doc, "/api/v1/editions/{edition}/lines", "get", "200")
    line = _schema(doc, lines["properties"]["lines"]["items"])
    assert "reach" in line["required"]
    detail = _json_schema(doc, "/api/v1/lines/{line_id}", "get", "200")
    assert {"line", "history", "reach"} <= set(detail["required"])
    # Issue 11: the desk names topics in its language from the config's `topic_names`.
    config = _json_schema(doc, "/api/v1/config", "get", "200")
    assert "topic_names" in config["required"]
    assert config["properties"]["topic_names"]["additionalProperties"]["additionalProperties"] == {
        "type": "string"
    }
    error = doc["components"]["responses"]["Error"]["content"]["application/json"]["schema"]
    assert set(_schema(doc, error)["properties"]) == {"error"}


@pytest.mark.parametrize(("limit", "editions"), [(280, "en,ar,es"), (120, "en,fr")])
def test_limits_and_choices_are_the_configured_ones(limit: int, editions: str) -> None:
    """The headline limit, editions and topics in the document are the settings', whatever they are."""
    configured = Settings.from_env({"FLASHWIRE_TEXT_MAX_CHARS": str(limit), "FLASHWIRE_EDITIONS": editions})
    settings = dataclasses.replace(configured, max_topics=3)
    doc = openapi_document(settings)
    request = _schema(
        doc, doc["paths"]["/api/v1/lines"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    )
    assert request["properties"]["text"]["maxLength"] == limit
    assert request["properties"]["edition"]["enum"] == editions.split(",")
    assert request["properties"]["topics"]["maxItems"] == 3
    assert request["properties"]["topics"]["items"]["enum"] == list(settings.topics)
    path_edition = doc["paths"]["/api/v1/editions/{edition}/lines"]["get"]["parameters"][0]
    assert path_edition["schema"]["enum"] == editions.split(",")
    validate(doc)


def _validator(doc: dict[str, Any], schema: dict[str, Any]) -> Draft202012Validator:
    """A validator for `schema`, whose `$ref`s point into the document's components."""
    registry: Registry[Any] = Registry().with_resource("urn:openapi", DRAFT202012.create_resource(doc))
    refs = {"$ref": f"urn:openapi{schema['$ref']}"} if "$ref" in schema else schema
    return Draft202012Validator(refs, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER)


async def test_health_answers_are_documented_for_every_status_they_use(app: InProcessApp) -> None:
    """/healthz answers 503 'unavailable' and /readyz 503 'unready', with a body: both statuses are in
    the document with the body's schema, and a real answer validates against the schema of its status."""
    doc = openapi_document(app.settings)
    for path, model in (("/healthz", "Health"), ("/readyz", "Readiness")):
        responses = doc["paths"][path]["get"]["responses"]
        assert set(responses) == {"200", "503"}, path
        for status in ("200", "503"):
            assert responses[status]["content"]["application/json"]["schema"] == {
                "$ref": f"#/components/schemas/{model}"
            }
        answer = await app.client.get(path)
        schema = responses[str(answer.status_code)]["content"]["application/json"]["schema"]
        assert list(_validator(doc, schema).iter_errors(answer.json())) == [], answer.text
    statuses = _schema(doc, {"$ref": "#/components/schemas/Health"})["properties"]["status"]["enum"]
    assert "unavailable" in statuses


def test_request_schemas_say_what_the_validation_does() -> None:
    """A correction must change something (minProperties 1); a link is an IRI, as IRIs are accepted;
    text limits say they count characters after whitespace is collapsed and NFC."""
    doc = openapi_document(Settings())
    schemas = doc["components"]["schemas"]
    correction = schemas["CorrectionRequest"]
    assert correction["minProperties"] == 1
    assert list(_validator(doc, correction).iter_errors({})) != []
    for name in ("PostLineRequest", "CorrectionRequest"):
        [url] = [s for s in schemas[name]["properties"]["url"]["anyOf"] if s["type"] == "string"]
        assert url["format"] == "iri" and "IRI" in url["description"], name
        text = schemas[name]["properties"]["text"]
        assert "collapse" in text["description"] and "NFC" in text["description"], name
        assert "characters (code points) of the text so cleaned" in text["description"], name
    iri = {"edition": "en", "text": "Séisme", "url": "https://例え.jp/ニュース/地震"}
    assert list(_validator(doc, schemas["PostLineRequest"]).iter_errors(iri)) == []


def test_shared_rules_are_published_from_their_one_definition() -> None:
    """The Idempotency-Key rule, the audit page limit and audit id, and the scheduled list's cap come
    from the definitions the service checks them with."""
    doc = openapi_document(Settings())
    key = next(
        p for p in doc["paths"]["/api/v1/lines"]["post"]["parameters"] if p["name"] == "Idempotency-Key"
    )
    published = IDEMPOTENCY_KEY_ADAPTER.json_schema()
    assert key["schema"]["pattern"] == published["pattern"] and key["description"] == published["description"]
    audit = {p["name"]: p["schema"] for p in doc["paths"]["/api/v1/audit"]["get"]["parameters"]}
    assert audit["limit"]["maximum"] == PAGE_MAX
    before = Draft202012Validator(audit["before"])
    for value, valid in (("", True), ("1795625033442-0", True), ("7", True), ("1-2-3", False), ("x", False)):
        assert before.is_valid(value) == valid == (value == "" or is_cursor(value)), value
    scheduled = doc["paths"]["/api/v1/editions/{edition}/scheduled"]["get"]
    assert str(SCHEDULED_LIST_MAX) in scheduled["summary"]
    lines = _json_schema(doc, "/api/v1/editions/{edition}/scheduled", "get", "200")["properties"]["lines"]
    assert lines["maxItems"] == SCHEDULED_LIST_MAX
