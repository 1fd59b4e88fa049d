"""GET /openapi.json: the router's API as an OpenAPI 3.1 document that names
every route the application registers, and is readable without a key."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from aiohttp.test_utils import TestClient, TestServer

from router.api.openapi import PATH, build_document
from router.app import create_app
from router.catalogue.config import NAME_RE
from router.catalogue.parse import parse_config
from router.http.errors import error_body
from router.http.launch_args import LAUNCH_KEYS

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
CONFIG = {"router": {"api_keys": ["k-12345678"], "admin_token": "admin-token-1"}}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return build_document()


def validator(doc: dict[str, Any], name: str) -> jsonschema.Draft202012Validator:
    """A validator for one schema of the document, its references resolved in the document."""
    return jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": doc["components"]})


def registered_routes() -> set[tuple[str, str]]:
    """(METHOD, path template) of every route create_app registers; HEAD is implied by GET."""
    app = create_app(parse_config(CONFIG, "<test>"))
    out = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None}
    return {(m, p) for m, p in out if not (m == "HEAD" and ("GET", p) in out)}


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                yield method.upper(), path, item[method]


def test_every_registered_route_is_documented(doc):
    documented = {(m, p) for m, p, _ in operations(doc)}
    missing = sorted(f"{m} {p}" for m, p in registered_routes()
                     if (m, p) not in documented and not (m == "*" and any(dp == p for _, dp in documented)))
    assert not missing, f"routes missing from {PATH}: {missing}"


def test_every_documented_operation_is_a_route(doc):
    routes = registered_routes()
    any_method = {p for m, p in routes if m == "*"}
    stale = sorted(f"{m} {p}" for m, p, _ in operations(doc)
                   if (m, p) not in routes and p not in any_method and p != "/")  # "/" is the catch-all's
    assert not stale, f"documented but not served: {stale}"


def test_it_is_a_valid_openapi_3_1_document(doc):
    from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

    errors = [f"{list(e.instance_path)}: {e.message[:200]}" for e in OPENAPI_31_VALIDATOR.iter_errors(doc)]
    assert not errors
    for schema in doc["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)  # each a valid JSON Schema 2020-12


# A reload that refuses the catalogue answers its result (`ok: false`, `error` the message), as
# docs/operations.md documents it and clients read it; the WebUI's pages answer an HTML page
# when no WebUI is built. Every other error is OpenAI-shaped.
NOT_ERROR_SHAPED = {("POST", "/admin/reload"), ("POST", "/admin/rescan"), ("GET", "/"), ("GET", "/{tail}")}


def test_every_operation_answers_with_the_one_error_shape(doc):
    for method, path, op in operations(doc):
        # Ollama's API (router/api/ollama.py) answers Ollama's shape, {"error": "message"}.
        shape = "OllamaError" if path.startswith("/api/") and "ollama" in op["tags"] else "Error"
        for status, response in op["responses"].items():
            if status.startswith(("4", "5")) and (method, path) not in NOT_ERROR_SHAPED:
                assert response == {"$ref": f"#/components/responses/{shape}{status}"}, (method, path, status)
    errors = doc["components"]["responses"]
    error = validator(doc, "Error")
    for status in errors:
        if status.startswith("Error"):
            error.validate(error_body(int(status.removeprefix("Error")), "message", code="some_code"))
    error.validate(error_body(502, "upstream failed"))  # the code defaults to the status, an integer
    ollama = validator(doc, "OllamaError")
    ollama.validate({"error": "model 'x' not found"})
    assert not ollama.is_valid(error_body(404, "model 'x' not found"))


def test_operations_that_take_a_key_say_so(doc):
    public = {(m, p) for m, p, op in operations(doc) if op.get("security") == []}
    assert ("GET", "/health") in public and ("GET", PATH) in public and ("GET", "/dashboard") in public
    assert ("GET", "/v1/models") not in public
    for method, path, op in operations(doc):
        if path.startswith("/admin/"):
            assert {"adminToken": []} in op["security"], (method, path)
        if (method, path) not in public:
            assert "401" in op["responses"], (method, path)


def test_inference_bodies_require_a_model_and_refuse_launch_keys(doc):
    body = validator(doc, "InferenceRequest")
    assert body.is_valid({"model": "gemma", "messages": [], "stream": True, "keep_alive": "5m"})
    assert not body.is_valid({"messages": []})
    assert not body.is_valid({"model": "../etc/passwd"})
    for key in LAUNCH_KEYS:
        assert not body.is_valid({"model": "gemma", key: ["--port", "1"]}), key
    chat = doc["paths"]["/v1/chat/completions"]["post"]
    assert chat["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/InferenceRequest"}


@pytest.mark.parametrize("name", ["gemma", "ggml-org/gemma-3-270m-GGUF:Q8_0", "a+b_c.d-e", "x" * 128,
                                  "../etc", "/abs", "a//b", "a/", "-flag", "tiny\n", "x" * 129, "a b"])
def test_the_name_pattern_is_the_catalogues_rule(doc, name):
    schema = doc["components"]["schemas"]["ModelName"]
    ecma_like = re.fullmatch(schema["pattern"].strip("^$"), name) is not None and len(name) <= schema["maxLength"]
    assert ecma_like == bool(NAME_RE.fullmatch(name))


async def test_it_is_served_without_a_key_while_the_api_needs_one():
    client = TestClient(TestServer(create_app(parse_config(CONFIG, "<test>"))))
    await client.start_server()
    try:
        r = await client.get(PATH)
        assert r.status == 200 and r.content_type == "application/json"
        assert (await r.json()) == build_document()
        r = await client.get("/v1/models")
        assert r.status == 401  # the rest of the API still needs a key
    finally:
        await client.close()
