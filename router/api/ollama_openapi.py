"""Ollama's API (api/ollama.py, api/ollama_store.py) in the router's OpenAPI
document (api/openapi.py merges it): its paths, its bodies as far as the router
reads them, and its one error shape, `{"error": "message"}`."""

from __future__ import annotations

from typing import Any

JSON, NDJSON = "application/json", "application/x-ndjson"
Schema = dict[str, Any]
ERROR_CODES = (400, 401, 403, 404, 408, 409, 413, 429, 500, 502, 503)
_KEYED = (401, 403, 429)  # what an API key may be refused with


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): {"$ref": f"#/components/responses/OllamaError{c}"} for c in codes}


def error_responses(texts: dict[str, str]) -> dict[str, Any]:
    """`OllamaError{code}` for each code, described as the router's own error of that code (`texts`)."""
    return {f"OllamaError{c}": {"description": texts.get(str(c), "The model server's error."),
                                "content": {JSON: {"schema": _ref("OllamaError")}}} for c in ERROR_CODES}


def schemas() -> dict[str, Schema]:
    options = {"type": "object", "description": "Ollama's model options: sampling ones go to llama-server; "
                                                "launch ones (num_ctx...) are the catalogue's (docs/ollama.md)."}
    message = {"type": "object", "required": ["role"], "properties": {
        "role": {"enum": ["system", "user", "assistant", "tool"]}, "content": {"type": ["string", "null"]},
        "images": {"type": ["array", "null"], "items": {"type": "string"}},
        "thinking": {"type": ["string", "null"]}, "tool_name": {"type": ["string", "null"]},
        "tool_calls": {"type": ["array", "null"], "items": {"type": "object", "required": ["function"]}}}}
    common = {"model": _ref("ModelName"), "stream": {"type": "boolean"}, "keep_alive": _ref("KeepAlive"),
              "options": options, "format": {"anyOf": [{"enum": ["json", ""]}, {"type": "object"}]},
              "think": {"anyOf": [{"type": "boolean"}, {"enum": ["low", "medium", "high", "max"]}]}}
    return {
        "OllamaError": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}},
                        "description": "Ollama's error shape, on its paths."},
        "OllamaChat": {"type": "object", "required": ["model"], "properties": {
            **common, "messages": {"type": "array", "items": message},
            "tools": {"type": "array", "items": {"type": "object"}}}},
        "OllamaGenerate": {"type": "object", "required": ["model"], "properties": {
            **common, "prompt": {"type": "string"}, "suffix": {"type": "string"}, "system": {"type": "string"},
            "raw": {"type": "boolean"}, "images": {"type": "array", "items": {"type": "string"}}}},
        "OllamaEmbed": {"type": "object", "required": ["model"], "properties": {
            "model": _ref("ModelName"), "keep_alive": _ref("KeepAlive"), "dimensions": {"type": "integer"},
            "input": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}}},
        "OllamaModel": {"type": "object", "required": ["name", "model", "size", "digest", "details"], "properties": {
            "name": {"type": "string"}, "model": {"type": "string"}, "modified_at": {"type": "string"},
            "size": {"type": "integer"}, "digest": {"type": "string"}, "details": {"type": "object"},
            "expires_at": {"type": "string"}, "size_vram": {"type": "integer"},
            "context_length": {"type": "integer"}}},
        "OllamaModels": {"type": "object", "required": ["models"], "properties": {
            "models": {"type": "array", "items": _ref("OllamaModel")}}},
    }


def _op(summary: str, ok: dict[str, Any], errors: tuple[int, ...], body: Schema | None = None,
        public: bool = False) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "tags": ["ollama"],
                          "responses": dict(sorted({**ok, **_errors(*errors, *(() if public else _KEYED))}.items()))}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {JSON: {"schema": body}}}
    if public:
        op["security"] = []
    return op


def _ok(description: str, schema: Schema | None = None, streamed: bool = False) -> dict[str, Any]:
    content = {JSON: {"schema": schema or {"type": "object"}}}
    if streamed:
        content[NDJSON] = {"schema": {"type": "object"}}
    return {"200": {"description": description, "content": content}}


def paths() -> dict[str, Any]:
    named = {"type": "object", "properties": {"model": {"type": "string"}, "name": {"type": "string"}}}
    generation = (400, 404, 408, 413, 500, 502, 503)
    not_here = _op("Not supported by llama-router: always a 400 that says why (docs/ollama.md)", {}, (400,))
    return {
        "/api/version": {"get": _op("The Ollama API version this follows", _ok("The version.", {
            "type": "object", "required": ["version"], "properties": {"version": {"type": "string"}}}), (),
            public=True)},
        "/api/tags": {"get": _op("The models, named `model:tag`", _ok("The list.", _ref("OllamaModels")), ())},
        "/api/ps": {"get": _op("The loaded models", _ok("The list.", _ref("OllamaModels")), ())},
        "/api/show": {"post": _op("A model's details, GGUF metadata and capabilities", _ok("The details."),
                                  (400, 404, 408, 413), named)},
        "/api/chat": {"post": _op("Chat: NDJSON unless `stream: false`; no messages loads the model",
                                  _ok("The reply.", streamed=True), generation, _ref("OllamaChat"))},
        "/api/generate": {"post": _op("Generate: NDJSON unless `stream: false`; no prompt loads the model",
                                      _ok("The reply.", streamed=True), generation, _ref("OllamaGenerate"))},
        "/api/embed": {"post": _op("Embeddings of one text or many", _ok("The vectors."), generation,
                                   _ref("OllamaEmbed"))},
        "/api/embeddings": {"post": _op("One text's embedding (Ollama's older API)", _ok("The vector."),
                                        generation, named)},
        "/api/pull": {"post": _op("Download hf.co/user/repo:QUANT from Hugging Face; NDJSON progress unless "
                                  "`stream: false`", _ok("Done.", streamed=True), (400, 408, 409, 413, 500),
                                  named)},
        "/api/delete": {"delete": _op("Delete a model of the Hugging Face cache (or cancel its download)",
                                      {"200": {"description": "Deleted."}}, (400, 403, 404, 408, 409, 413, 500),
                                      named)},
        "/api/copy": {"post": _op("Answers 200 when the destination already names the model, else an error "
                                  "(an alias is the catalogue's)", {"200": {"description": "Nothing to do."}},
                                  (400, 404, 408, 413), {"type": "object"})},
        "/api/create": {"post": not_here}, "/api/push": {"post": not_here},
        "/api/blobs/{digest}": {"post": {**not_here, "parameters": [
            {"name": "digest", "in": "path", "required": True, "schema": {"type": "string"}}]}},
    }
