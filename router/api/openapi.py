"""The router's own HTTP API as an OpenAPI 3.1 document, served at GET /openapi.json.

One source of truth: the document is built here, from the same tables the
routes are registered from where there are such tables (the inference
paths of api/inference.py, the launch keys of http/launch_args.py, the
model-name rule of the catalogue), and `tests/unit/api/test_openapi.py`
fails when a route the application registers is missing from it.

It describes what the router itself reads and answers. A request routed to
a model is relayed to its llama-server child, which validates the rest of
the body and answers in its own words: those replies are documented as the
child's (`default`), the router's own errors with the one error shape
`{"error": {"message", "type", "code"}}`. The document holds no secret, so
it is served without an API key, like /health.

Longer than 300 lines because the document is one literal description of
about seventy operations; splitting it would scatter one table.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from aiohttp import web

from router import __version__
from router.api import media, ollama_openapi
from router.api.inference import GET_ROUTES, POST_ROUTES
from router.http import access
from router.http.launch_args import LAUNCH_KEYS

PATH = "/openapi.json"
JSON = "application/json"
SSE = "text/event-stream"
Schema = dict[str, Any]

# config.NAME_RE in JSON Schema's dialect (no lookahead: the length is maxLength).
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:+-]*(/[A-Za-z0-9][A-Za-z0-9._:+-]*)*$"
SEGMENT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:+-]*$"  # a name inside one path segment: no '/'
MULTIPART_PATH = "/v1/audio/transcriptions"

_ERRORS = {
    "400": "The request is malformed: its body, the model name, a parameter or a launch argument.",
    "401": "An API key (or, under /admin, the admin token) is missing or wrong.",
    "403": "Refused: an API key whose role does not reach this route, /admin without an admin token, a "
           "disabled feature, or a path outside the model folders.",
    "404": "No such model, stream or route.",
    "408": "The request body did not arrive within router.body_timeout.",
    "409": "The request conflicts with the state of the model or the catalogue.",
    "413": "The request body is larger than router.max_body_bytes.",
    "415": "The body's Content-Type is not one this route reads.",
    "429": "The model's queue is full (max_queue), or the API key's rate or concurrency limit is reached; "
           "retry after Retry-After seconds.",
    "502": "The model's child failed or died while answering.",
    "503": "The model cannot be served now: it failed to load, was removed, or does not fit in memory.",
}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _content(schema: Schema, media: str = JSON) -> dict[str, Any]:
    return {"content": {media: {"schema": schema}}}


def _ok(description: str, schema: Schema | None = None, media: str = JSON) -> dict[str, Any]:
    return {"200": {"description": description, **_content(schema if schema is not None else {}, media)}}


def _err(*codes: int) -> dict[str, Any]:
    return {str(c): {"$ref": f"#/components/responses/Error{c}"} for c in codes}


def _body(schema: Schema, required: bool = True, media: str = JSON) -> dict[str, Any]:
    return {"requestBody": {"required": required, **_content(schema, media)}}


def _query(name: str, description: str, schema: Schema | None = None, required: bool = False) -> Schema:
    return {"name": name, "in": "query", "required": required, "description": description,
            "schema": schema or {"type": "string"}}


def _path(name: str, description: str, schema: Schema | None = None) -> Schema:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": schema or {"type": "string"}}


PUBLIC: list[dict[str, list[str]]] = []  # `security` of an operation that needs no key
ADMIN: list[dict[str, list[str]]] = [{"adminToken": []}, {"adminTokenHeader": []}, {"apiKeyHeader": []}]


def _op(summary: str, tag: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """An operation; one that takes a key (any but `security=PUBLIC`, that very list) may also
    answer what keys are refused with."""
    if extra.get("security") is not PUBLIC:
        responses = {**responses, **_err(401, 403, 429)}
    return {"summary": summary, "tags": [tag], "responses": dict(sorted(responses.items())), **extra}


MODEL_QUERY = _query("model", "The model (name or alias); URL-encoded when it holds '/'.", _ref("ModelName"))
GET_MODEL_QUERY = _query("model", "The model (name or alias); without it (or empty), see the summary.",
                         {"anyOf": [_ref("ModelName"), {"const": ""}]})
AUTOLOAD = _query("autoload", "`false` (or anything but `true`/`1`): answer only from a running model, never "
                  "load one (llama.cpp's router API); `true` or `1` loads it even under --no-models-autoload; "
                  "without it, router.models_autoload decides.", {"type": "string", "examples": ["false", "true"]})


def _events(payload: Schema) -> dict[str, Any]:
    """Server-sent events whose `data` is a JSON document matching `payload` (one schema per event)."""
    return _ok("Server-sent events (`data: {...}` lines) until the client leaves or the router stops.", {
        "type": "object", "required": ["data"], "properties": {"data": {
            "type": "string", "contentMediaType": JSON, "contentSchema": payload}}}, SSE)


CHILD_EVENT = {"type": "object", "description": "One event of the child's stream; `data: [DONE]` ends a chat stream.",
               "properties": {"data": {"type": "string"}}}
MODEL_EVENTS = _events({"type": "object", "required": ["model", "event", "data"], "properties": {
    "model": {"type": "string"}, "event": {"type": "string"}, "data": {"type": "object"}}})
CHILD_REPLY = {"default": {"description": "The child's own answer, relayed as it is (llama-server's status "
                                          "and error shape).",
                           "content": {JSON: {"schema": {}}, SSE: {"schema": CHILD_EVENT},
                                       "text/plain": {"schema": {"type": "string"}}}}}


def _schemas() -> dict[str, Schema]:
    str_list = {"type": "array", "items": {"type": "string"}}
    return {
        "Error": {
            "type": "object", "required": ["error"],
            "description": "The one error shape (OpenAI's), for the router's own errors and the children's.",
            "properties": {"error": {"type": "object", "required": ["message", "type", "code"], "properties": {
                "message": {"type": "string"},
                "type": {"type": "string", "examples": ["invalid_request_error", "not_found_error"]},
                "code": {"type": ["string", "integer"], "examples": ["model_not_found", 400]}}}}},
        "ModelName": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": NAME_PATTERN,
                      "description": "A model's name or alias: letters, digits and . _ : + -, with single '/' "
                                     "between parts. Anything else is a 400 and is never looked up.",
                      "examples": ["gemma", "ggml-org/gemma-3-270m-GGUF:Q8_0"]},
        "KeepAlive": {"type": ["number", "string"],
                      "description": "Ollama's keep_alive: seconds, or a duration such as \"10m\" or \"1h30m\"; "
                                     "0 unloads the model after this reply, -1 keeps it loaded. Removed before "
                                     "the body reaches the child.",
                      "examples": [300, "10m", 0, -1]},
        "InferenceRequest": {
            "type": "object", "required": ["model"], "additionalProperties": True,
            "description": "What the router reads of an inference body: `model`, `keep_alive`, and `stream` "
                           "(`true` streams the reply as server-sent events). Every other key goes to the child "
                           "unchanged and is validated there (llama-server's and OpenAI's documentation describe "
                           "them). Launch settings are refused.",
            "properties": {"model": _ref("ModelName"), "keep_alive": _ref("KeepAlive")},
            "propertyNames": {"not": {"enum": sorted(LAUNCH_KEYS)}}},
        "Success": {"type": "object", "required": ["success"], "properties": {"success": {"const": True}}},
        "ModelStatus": {"type": "object", "required": ["value"], "properties": {
            "value": {"enum": ["unloaded", "loading", "loaded", "downloading"]}, "args": str_list,
            "failed": {"type": "boolean"}, "exit_code": {"type": ["integer", "null"]},
            "progress": {"type": ["number", "object"]}}},
        "ModelEntry": {"type": "object", "required": ["id", "object", "owned_by", "created", "status"],
                       "properties": {"id": {"type": "string"}, "aliases": str_list, "tags": str_list,
                                      "name": {"type": "string", "description": "What clients show: the "
                                               "catalogue's display name, else the id"},
                                      "object": {"const": "model"}, "owned_by": {"type": "string"},
                                      "created": {"type": "integer"}, "status": _ref("ModelStatus"),
                                      "meta": {"type": "object"}, "memory": {"type": "object"},
                                      "description": {"type": "string"}, "metadata": {"type": "object"},
                                      "capabilities": {"type": "object"},
                                      "virtual_of": {"type": "string", "description": "A virtual id "
                                                     "(set_params_by_id): the model that serves it"},
                                      "profile": {"type": "string", "description": "A pin of the active "
                                                  "profile (docs/api.md#profiles): the profile's name"},
                                      "pinned_to": {"type": "string", "description": "A pin: the model (or "
                                                    "alias, virtual id, selector) that serves it"}}},
        "ModelList": {"type": "object", "required": ["object", "data"], "properties": {
            "object": {"const": "list"}, "data": {"type": "array", "items": _ref("ModelEntry")}}},
        "RouterProps": {"type": "object", "required": ["role"], "properties": {
            "role": {"const": "router"}, "max_instances": {"type": "integer"},
            "models_autoload": {"type": "boolean"}, "build_info": {"type": "string"},
            "router_version": {"type": "string"}}},
        "ReloadResult": {
            "type": "object", "required": ["ok"],
            "description": "What a reload did; `ok: false` with `error` when the catalogue cannot be used (the "
                           "running one stays).",
            "properties": {"ok": {"type": "boolean"}, "error": {"type": "string"}, "added": str_list,
                           "removed": str_list, "changed": str_list, "kept": str_list, "restarting": str_list,
                           "needs_restart": str_list, "imported": str_list, "missing": str_list,
                           "skipped": {"type": "array", "items": {"type": "object"}}}},
        "AdminModel": {"type": "object", "required": ["model", "state"], "properties": {
            "model": {"type": "string"}, "state": {"enum": ["unloaded", "loading", "loaded", "unloading"]},
            "pid": {"type": ["integer", "null"]}, "port": {"type": ["integer", "null"]},
            "in_flight": {"type": "integer"}, "waiting": {"type": "integer"}, "loads": {"type": "integer"},
            "failed": {"type": "boolean"}, "argv": str_list}},
        "AdminStatus": {"type": "object", "required": ["models"], "properties": {
            "catalogue": {"type": "string"}, "models_max": {"type": ["integer", "null"]},
            "memory": {"type": "object"}, "models": {"type": "array", "items": _ref("AdminModel")}}},
        "LoadRequest": {"type": "object", "properties": {
            "args": {**str_list, "maxItems": 32,
                     "description": "Extra child arguments; only flags the model's allow_args lists."}},
            "propertyNames": {"not": {"enum": sorted(LAUNCH_KEYS - {"args"})}}},
        "Activity": {"type": "object", "required": ["time", "model", "endpoint", "status"], "properties": {
            "time": {"type": "number"}, "request_id": {"type": "string"}, "model": {"type": "string"},
            "endpoint": {"type": "string"}, "status": {"type": "integer"}}},
    }


def _inference_paths() -> dict[str, Any]:
    errors = _err(400, 404, 408, 413, 429, 502, 503)
    ok = {"200": {"description": "The child's reply: JSON, or server-sent events with `\"stream\": true`.",
                  "content": {JSON: {"schema": {}}, SSE: {"schema": CHILD_EVENT}}}}
    paths: dict[str, Any] = {}
    for path in POST_ROUTES:
        if path == MULTIPART_PATH:
            audio = {"type": "string", "contentMediaType": "application/octet-stream"}
            body = _body({"type": "object", "required": ["model", "file"],
                          "properties": {"model": _ref("ModelName"), "file": audio}}, media="multipart/form-data")
        else:
            body = _body(_ref("InferenceRequest"))
        paths[path] = {"post": _op(f"POST {path}, sent to the model the body names", "inference",
                                   {**ok, **errors, **CHILD_REPLY}, **body)}
    paths["/slots/{id}"] = {"post": _op(
        "A slot action (save, restore, erase) on the model named by ?model= or the body", "inference",
        {**ok, **errors, **CHILD_REPLY},
        parameters=[_path("id", "The slot id.", {"type": "integer", "minimum": 0}), MODEL_QUERY,
                    _query("action", "llama-server's slot action.", {"enum": ["save", "restore", "erase"]})],
        requestBody={"required": False, **_content({"type": "object"})})}
    paths.update(_media_paths(ok, errors))
    rid = _path("id", "The response's id (`resp_...`); another API key's is 404.")
    for root in ("/v1/responses", "/responses"):  # stored responses (docs/conversations.md)
        paths[root + "/{id}"] = {
            "get": _op("A stored response", "inference", {**_ok("The response object.", {"type": "object"}),
                                                          **_err(404)}, parameters=[rid]),
            "delete": _op("Delete a stored response", "inference", {
                **_ok("Deleted.", {"type": "object", "required": ["id", "deleted"]}), **_err(404)},
                parameters=[rid])}
        paths[root + "/{id}/input_items"] = {"get": _op(
            "The input items of a stored response's request (OpenAI's list)", "inference",
            {**_ok("The list.", {"type": "object", "required": ["object", "data", "has_more"]}), **_err(400, 404)},
            parameters=[rid, _query("limit", "1-100, 20 by default.", {"type": "integer"}),
                        _query("order", "`desc` (default) or `asc`.", {"enum": ["asc", "desc"]}),
                        _query("after", "The item id to list after.")])}
    for path in GET_ROUTES:
        own = {"/props": "the router's own `/props` (`role: router`)",
               "/metrics": "the router's own metrics with every running child's merged in"}.get(
            path, "the model started last")
        content: dict[str, Any] = {JSON: {"schema": _ref("RouterProps") if path == "/props" else {}}}
        if path == "/metrics":
            content = {"text/plain": {"schema": {"type": "string"}}}
        summary = f"GET {path} of the model named by ?model=; without it, {own}"
        paths.setdefault(path, {})["get"] = _op(summary, "inference", {
            "200": {"description": "The child's reply, or the router's own.", "content": content},
            **_err(400, 404, 429, 502, 503), **CHILD_REPLY}, parameters=[GET_MODEL_QUERY, AUTOLOAD])
    upstream = {m: _op(f"{m.upper()} straight to one child (its own web UI, debugging)", "inference",
                       {**_err(400, 404, 408, 413, 502, 503), **CHILD_REPLY},
                       parameters=[_path("model", "The model.", {**_ref("ModelName"), "pattern": SEGMENT_PATTERN}),
                                   _path("path", "The child's path, without its leading '/'.")])
                for m in ("get", "post", "put", "patch", "delete")}
    for m in ("post", "put", "patch"):
        upstream[m]["requestBody"] = {"required": False, "content": {"*/*": {"schema": {}}}}
    paths["/upstream/{model}/{path}"] = upstream
    return paths


def _media_paths(ok: dict[str, Any], errors: dict[str, Any]) -> dict[str, Any]:
    """Speech, images, the sdapi and the versionless /v/ paths (api/media.py)."""
    paths: dict[str, Any] = {}
    for path in media.JSON_ROUTES:
        paths[path] = {"post": _op(f"POST {path}, sent as it is to the model the body names", "inference",
                                   {**ok, **errors, **CHILD_REPLY}, **_body(_ref("InferenceRequest")))}
    for path in media.FORM_ROUTES:
        form = {"type": "object", "required": ["model"], "properties": {
            "model": _ref("ModelName"), "image": {"type": "string", "contentMediaType": "application/octet-stream"}}}
        paths[path] = {"post": _op(f"POST {path} (multipart, the model a form field), sent as it is", "inference",
                                   {**ok, **errors, **CHILD_REPLY}, **_body(form, media="multipart/form-data"))}
    for path in media.GET_ROUTES:
        paths.setdefault(path, {})["get"] = _op(f"GET {path} of the model named by ?model=", "inference", {
            **ok, **_err(400, 404, 429, 502, 503), **CHILD_REPLY}, parameters=[MODEL_QUERY])
    for path in media.VERSIONLESS:
        paths[path] = {"post": _op(f"POST {path}: {path[2:]} on the model's server (llama-swap's versionless "
                                   "path)", "inference", {**ok, **errors, **CHILD_REPLY},
                                   **_body(_ref("InferenceRequest")))}
    for path in media.AUDIOAPI:
        paths[path] = {"post": _op(f"POST {path}: audio.cpp's {path.removeprefix('/audioapi')} on the model's "
                                   "server", "inference", {**ok, **errors, **CHILD_REPLY},
                                   **_body(_ref("InferenceRequest")))}
    return paths


def _model_api_paths() -> dict[str, Any]:
    model_body = {"type": "object", "required": ["model"], "properties": {"model": {"type": "string"}}}
    health = {"get": _op("The router is up", "models", _ok("Always, while the router runs.", {
        "type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}}), security=PUBLIC)}
    models = {"get": _op("Every model with its status (llama.cpp's router API)", "models",
                         _ok("The list.", _ref("ModelList")),
                         parameters=[_query("reload", "Any non-empty value re-reads the catalogue and its "
                                                      "sources first.")])}
    return {
        "/health": health, "/v1/health": health, "/v1/models": models,
        "/models": {
            **models,
            "post": _op("Download `user/repo[:QUANT]` from Hugging Face into its cache, in the background",
                        "models", {**_ok("Started.", _ref("Success")), **_err(400, 408, 409, 413)},
                        **_body(model_body)),
            "delete": _op("Cancel a download, or delete a model found in the Hugging Face cache", "models",
                          {**_ok("Done.", _ref("Success")), **_err(400, 403, 404, 409)},
                          parameters=[_query("model", "The model or download.", {"type": "string"}, True)]),
        },
        "/models/reload": {"post": _op("Re-read the catalogue and its sources", "models", {
            **_ok("The reload's result.", {**_ref("ReloadResult"), "required": ["success"]}), **_err(400)})},
        "/models/load": {"post": _op("Load a model (optional whitelisted `args`)", "models",
                                     {**_ok("Loading; watch /models/sse.", _ref("Success")),
                                      **_err(400, 404, 408, 409, 413)},
                                     **_body({"allOf": [_ref("LoadRequest"), {
                                         "type": "object", "required": ["model"],
                                         "properties": {"model": _ref("ModelName")}}]}))},
        "/models/unload": {"post": _op("Unload a model once idle, or cancel its download", "models",
                                       {**_ok("Unloading.", _ref("Success")), **_err(400, 404, 408, 413)},
                                       **_body(model_body))},
        "/models/sse": {"get": _op("Model events: status changes, loads, downloads, rescans", "models",
                                   MODEL_EVENTS)},
    }


def _admin_paths() -> dict[str, Any]:
    def admin(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return _op(summary, "admin", {**responses, **_err(403)}, security=ADMIN, **extra)

    name = _path("name", "The model (name or alias).", {**_ref("ModelName"), "pattern": SEGMENT_PATTERN})
    reload = {**_ok("What the reload did.", _ref("ReloadResult")),
              "400": {"description": "The catalogue cannot be used; the running one stays.",
                      **_content(_ref("ReloadResult"))}}
    acted = {"type": "object", "required": ["success", "model"], "properties": {
        "success": {"const": True}, "model": {"type": "string"}, "state": {"type": "string"}}}
    active = {"type": ["string", "null"], "description": "A profile's name; null: none."}
    profile = {"type": "object", "required": ["id", "description", "pins"], "properties": {
        "id": {"type": "string"}, "description": {"type": "string"},
        "pins": {"type": "object", "additionalProperties": {"type": ["string", "null"]}}}}
    return {
        "/admin/status": {"get": admin("Every model's process, load history and KV cache",
                                       _ok("The status.", _ref("AdminStatus")))},
        "/admin/reload": {"post": admin("Re-read the catalogue file now", reload)},
        "/admin/rescan": {"post": admin("Re-read the catalogue and its model sources", reload)},
        "/admin/models/{name}/load": {"post": admin(
            "Load a model", {**_ok("Loading.", acted), **_err(400, 404, 408, 409, 413)}, parameters=[name],
            requestBody={"required": False, **_content(_ref("LoadRequest"))})},
        "/admin/models/{name}/unload": {"post": admin("Unload a model once idle",
                                                      {**_ok("Unloading.", acted), **_err(400, 404)},
                                                      parameters=[name])},
        "/admin/models/{name}": {"delete": admin(
            "Remove a model from the catalogue; `?files=true` deletes its files too (only inside the model "
            "folders), or cancel its download", {**_ok("Removed.", {"type": "object", "required": ["success"]}),
                                                 **_err(400, 403, 404, 409)},
            parameters=[{**name, "description": "The model; a name with '/' may be given as it is."},
                        _query("files", "`true` also deletes the model's files.")])},
        "/admin/download": {"post": admin(
            "Download from Hugging Face; the first to finish becomes router.startup_model",
            {**_ok("Started.", {"type": "object", "required": ["success", "model", "events"]}),
             **_err(400, 408, 409, 413)},
            **_body({"type": "object", "properties": {
                "model": {"type": "string", "description": "user/repo:QUANT"},
                "repo": {"type": "string", "description": "user/repo"}, "quant": {"type": "string"}}}))},
        "/admin/downloads": {"get": admin("The downloads under way", _ok("Them.", {
            "type": "object", "required": ["downloads"],
            "properties": {"downloads": {"type": "array", "items": {"type": "object"}}}}))},
        "/admin/download/events": {"get": admin("Download events (those of /models/sse)", MODEL_EVENTS)},
        "/admin/captures": {"get": admin("The requests kept by router.capture_bytes, newest first", _ok("Them.", {
            "type": "object", "required": ["data", "capture_bytes", "used_bytes"],
            "properties": {"data": {"type": "array", "items": {"type": "object"}}}}))},
        "/admin/captures/{id}": {"get": admin(
            "One capture: the request (headers redacted, body as relayed) and the reply, bodies cut at 64 KiB",
            {**_ok("The capture.", {"type": "object", "required": ["id", "req_path", "req_headers", "req_body",
                                                                   "resp_headers", "resp_body"]}),
             **_err(400, 404)}, parameters=[_path("id", "The capture's id.", {"type": "integer"})])},
        "/admin/requests": {"get": admin(
            "The requests waiting for their model and in flight (never their text; docs/scheduling.md)",
            _ok("Them.", {"type": "object", "required": ["requests"], "properties": {"requests": {
                "type": "array", "items": {"type": "object", "required": ["id", "model", "key", "state", "age_s"],
                                           "properties": {
                    "id": {"type": "string"}, "model": {"type": "string"}, "key": {"type": ["string", "null"]},
                    "state": {"enum": ["waiting", "in_flight"]}, "age_s": {"type": "number"},
                    "position": {"type": ["integer", "null"]}, "estimate_s": {"type": ["number", "null"]},
                    "tokens": {"type": ["integer", "null"]}}}}}}))},
        "/admin/requests/{id}": {"delete": admin(
            "Cancel a request: a waiting one leaves its queue, one in flight stops; its client gets a 499 or a "
            "last error event", {**_ok("Cancelled.", {"type": "object", "required": ["id", "cancelled"]}),
                                 **_err(404)},
            parameters=[_path("id", "The request's id (its X-Request-Id).")])},
        "/admin/responses": {
            "get": admin("Stored responses per API key: their count and bytes (docs/conversations.md)", _ok("Them.", {
                "type": "object", "required": ["data"], "properties": {"data": {"type": "array", "items": {
                    "type": "object", "required": ["key", "owner", "responses", "bytes"]}}}})),
            "delete": admin("Delete every stored response of one key: ?key=api_keys[N] (or none), or ?owner=", {
                **_ok("How many.", {"type": "object", "required": ["deleted"]}), **_err(400)},
                parameters=[_query("key", "`api_keys[N]`, or `none` (requests without a key)."),
                            _query("owner", "The start of the key's digest (6+ characters) GET shows.")])},
        "/admin/config": {
            "get": admin("The catalogue as served, secrets hidden", _ok("The catalogue.", {"type": "object"})),
            "put": admin("Replace the catalogue file and apply it", {
                **_ok("The reload's result.", _ref("ReloadResult")), **_err(400, 408, 409, 413, 415)},
                requestBody={"required": True, "description": "The whole catalogue: YAML (written as sent) or "
                             "JSON (written as block-style YAML); text/yaml and application/x-yaml are read too.",
                             "content": {JSON: {"schema": {"type": "object"}},
                                         "application/yaml": {"schema": {"type": ["object", "null"]}},
                                         "text/plain": {"schema": {"type": "string"}}}}),
        },
        **{path: {"get": admin("The catalogue's profiles and the active one (llama-swap's path too; docs/api.md)",
                               _ok("Them.", {"type": "object", "required": ["active", "profiles"], "properties": {
                                   "active": active, "profiles": {"type": "array", "items": profile}}}))}
           for path in ("/admin/profiles", "/api/profiles")},
        **{path: {"put": admin("Switch a profile on, or none (`{\"name\": null}`)", {
            **_ok("The active profile.", {"type": "object", "required": ["active"], "properties": {"active": active}}),
            **_err(400, 404)}, **_body({"type": "object", "required": ["name"], "properties": {"name": active}}))}
           for path in ("/admin/profiles/active", "/api/profiles/active")},
    }


def _ui_paths() -> dict[str, Any]:
    model = _path("model", "The model (name or alias).", {**_ref("ModelName"), "pattern": SEGMENT_PATTERN})
    html = {"200": {"description": "The page.", **_content({"type": "string"}, "text/html")}}
    no_ui = {"description": "No WebUI is built: a page that says how to build one.",
             **_content({"type": "string"}, "text/html")}
    conv = _query("conv_id", "The WebUI's conversation id.", {"type": "string", "minLength": 1}, True)
    disabled = _op("Disabled, as llama-server in router mode answers (the WebUI hides the feature)", "webui",
                   _err(403), security=PUBLIC)
    return {
        "/logs/{model}": {"get": _op("A model's recent output", "logs", {
            "200": {"description": "Plain text, or JSON with ?format=json.", "content": {
                "text/plain": {"schema": {"type": "string"}},
                JSON: {"schema": {"type": "object", "required": ["model", "lines"], "properties": {
                    "model": {"type": "string"}, "lines": {"type": "array", "items": {"type": "string"}}}}}}},
            **_err(400, 404)}, parameters=[model, _query("format", "`json` for JSON; anything else is plain text.")])},
        "/logs/stream/{model}": {"get": _op("A model's output as server-sent events", "logs", {
            **_events({"type": "object", "required": ["model", "line"], "properties": {
                "model": {"type": "string"}, "line": {"type": "string"}}}), **_err(400, 404)},
            parameters=[model, _query("tail", "`0` skips the lines kept so far.")])},
        "/api/activity": {"get": _op("The last requests (never their content)", "activity", _ok(
            "Oldest first.", {"type": "object", "required": ["data"],
                              "properties": {"data": {"type": "array", "items": _ref("Activity")}}}))},
        "/api/activity/stream": {"get": _op("Each new request as a server-sent event", "activity",
                                            _events(_ref("Activity")))},
        "/dashboard": {"get": _op("The dashboard page", "dashboard", html, security=PUBLIC)},
        "/dashboard/": {"get": _op("The dashboard page", "dashboard", html, security=PUBLIC)},
        "/dashboard/api/models": {"get": _op("The dashboard's snapshot of the models", "dashboard", _ok(
            "The snapshot.", {"type": "object", "required": ["models"],
                              "properties": {"models": {"type": "array", "items": {"type": "object"}}}}))},
        "/v1/stream": {
            "get": _op("Reattach to a WebUI generation, relayed from the child that runs it", "webui", {
                **_ok("The child's stream.", CHILD_EVENT, SSE), **_err(400, 404, 502, 503),
                **CHILD_REPLY}, parameters=[conv]),
            "delete": _op("Stop a WebUI generation", "webui", {
                "204": {"description": "No such stream (any more)."}, **_ok("The child's answer."),
                **_err(400, 502), **CHILD_REPLY}, parameters=[conv]),
        },
        "/v1/streams/lookup": {"post": _op("Which of these conversations still stream", "webui", {
            **_ok("The children's answers, merged.", {"type": "array", "items": {"type": "object"}}),
            **_err(408, 413)}, requestBody={"required": False, "description": "`{\"conversation_ids\": [...]}`; "
                                            "any other body (none, not JSON, ids that are not strings) is answered "
                                            "with what the valid ids give, at worst `[]`, as the WebUI expects.",
                                            **_content({})})},
        "/tools": {"get": disabled, "post": disabled},
        "/cors-proxy": {"get": disabled, "post": disabled},
        "/": {"get": _op("llama.cpp's WebUI", "webui", {**html, "404": no_ui}, security=PUBLIC)},
        "/{tail}": {"get": _op("The WebUI's files; any other path is a JSON 404 (405 with Allow for a route "
                               "asked with the wrong method)", "webui", {
            "200": {"description": "A file of the WebUI.", "content": {"*/*": {"schema": {}}}}, **_err(405),
            "404": {"description": "No such file or route (JSON); /index.html without a WebUI build is the page "
                                   "that says how to build one (HTML).",
                    "content": {JSON: {"schema": _ref("Error")}, "text/html": {"schema": {"type": "string"}}}}},
            parameters=[_path("tail", "A file of the WebUI build.")], security=PUBLIC)},
        PATH: {"get": _op("This document", "meta", _ok("OpenAPI 3.1.", {"type": "object"}), security=PUBLIC)},
    }


def build_document() -> dict[str, Any]:
    """The whole document (a fresh dict: callers may change their copy)."""
    responses = {f"Error{code}": {"description": text, **_content(_ref("Error"))} for code, text in _ERRORS.items()}
    responses["Error405"] = {"description": "A route asked with a method it does not take (see Allow).",
                             **_content(_ref("Error"))}
    responses.update(ollama_openapi.error_responses(_ERRORS))  # Ollama's paths answer its own shape
    bearer = "`Authorization: Bearer <key>`"
    return {
        "openapi": "3.1.0",
        "info": {"title": "llama-router", "version": __version__,
                 "description": "One port for many llama.cpp models: OpenAI, Anthropic and llama.cpp APIs routed by "
                                "`model`, llama.cpp's router-mode model API, and the /admin API. Inference replies "
                                "are the children's own; the router's errors are OpenAI-shaped."},
        "tags": [{"name": t} for t in ("inference", "models", "admin", "logs", "activity", "dashboard", "webui",
                                         "meta", "ollama")],
        "security": [{"apiKey": []}, {"apiKeyHeader": []}, {}],
        "paths": {**_inference_paths(), **_model_api_paths(), **_admin_paths(), **_ui_paths(),
                  **ollama_openapi.paths()},
        "components": {
            "schemas": {**_schemas(), **ollama_openapi.schemas()},
            "responses": responses,
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer",
                           "description": f"One of router.api_keys as {bearer}; needed only when api_keys is set."},
                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "x-api-key",
                                 "description": "One of router.api_keys, as Anthropic clients send it."},
                "adminToken": {"type": "http", "scheme": "bearer",
                               "description": f"router.admin_token (or --admin-token) as {bearer}."},
                "adminTokenHeader": {"type": "apiKey", "in": "header", "name": "X-Admin-Token",
                                     "description": "router.admin_token."},
            },
        },
    }


@cache
def _served() -> bytes:
    """The served document, built by the first request for it, not at import: most routers
    never serve it, and building it (about 4 ms, 1.7 MiB of short-lived objects) slowed and
    grew every start-up."""
    return json.dumps(build_document(), indent=1).encode()


@access.declare(access.PUBLIC, access.Models.NONE)  # describes the API, holds no secret
async def handle_openapi(request: web.Request) -> web.Response:
    return web.Response(body=_served(), content_type=JSON)


def add_openapi_route(app: web.Application) -> None:
    """Before the WebUI's catch-all."""
    app.router.add_get(PATH, handle_openapi)
