"""Public HTTP routes: inference endpoints routed by model, and the
llama.cpp router-mode model API (/models, /models/load, /props...)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from . import __version__
from .config import NAME_RE, Config, ModelSpec
from .conversations import remember as remember_conversation
from .errors import HTTPError, error_response
from .jsonbody import parse_json_object
from .manager import Lease, ModelManager, ModelUnavailable
from .proxy import ModelRewriter, forward
from .requestargs import load_overrides, refuse_launch_keys
from .scheduler import State
from .sources import model_card
from .sse import relay
from .swapnotify import wants_progress, with_progress

# POST endpoints of llama-server that carry the model in the body.
POST_ROUTES = (
    "/completion", "/completions", "/v1/completions", "/chat/completions", "/v1/chat/completions",
    "/v1/chat/completions/control",
    "/v1/responses", "/responses", "/v1/messages", "/v1/messages/count_tokens", "/infill",
    "/embedding", "/embeddings", "/v1/embeddings", "/rerank", "/reranking", "/v1/rerank",
    "/v1/reranking", "/tokenize", "/detokenize", "/apply-template", "/v1/audio/transcriptions",
    "/lora-adapters",
)
# GET endpoints that take the model from ?model=.
GET_ROUTES = ("/props", "/slots", "/metrics", "/lora-adapters")

MANAGER = web.AppKey("manager", ModelManager)
SHUTDOWN = web.AppKey("shutdown", asyncio.Event)


def _manager(request: web.Request) -> ModelManager:
    return request.app[MANAGER]


def _short(name: str) -> str:
    return name if len(name) <= 120 else name[:120] + "..."


def resolve_model(manager: ModelManager, name: Any) -> ModelSpec:
    if name is None or name == "":
        raise HTTPError(400, "missing 'model': name the model to use", code="model_required")
    if not isinstance(name, str):
        raise HTTPError(400, "'model' must be a string", code="invalid_model")
    if not NAME_RE.match(name):
        # Never echoed, never looked up on disk: '/', '..', NUL and control characters stop here.
        raise HTTPError(400, "invalid model name: use letters, digits and . _ : + - (at most 128 characters)",
                        code="invalid_model")
    spec = manager.config.resolve(name)
    if spec is None:
        raise HTTPError(404, f"model '{_short(name)}' not found", "invalid_request_error", "model_not_found")
    return spec


async def read_body(request: web.Request) -> bytes:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        # The limit the server enforces (fixed at start), not a value reloaded since.
        limit = getattr(request, "_client_max_size", None) or request.app[MANAGER].config.router.max_body_bytes
        raise HTTPError(413, f"request body too large (limit {limit} bytes, router.max_body_bytes)",
                        code="body_too_large") from None
    except RequestPayloadError as e:  # e.g. Content-Encoding: gzip on a body that is not gzip
        raise HTTPError(400, f"request body cannot be read: {e.__cause__ or e}", code="invalid_body") from None


def multipart_model(content_type: str, body: bytes) -> str | None:
    """The `model` form field of a multipart body (audio transcriptions)."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    msg = BytesParser(policy=HTTP).parsebytes(head + body)
    if not msg.is_multipart():
        raise HTTPError(400, "malformed multipart body", code="invalid_multipart")
    for part in msg.iter_parts():
        if part.get_param("name", header="content-disposition") == "model":
            payload = part.get_payload(decode=True) or b""
            return payload.decode("utf-8", "replace").strip()
    return None


async def model_from_request(request: web.Request, body: bytes) -> str | None:
    ctype = request.content_type
    if request.method in ("GET", "HEAD", "DELETE"):
        return request.query.get("model")
    if ctype.startswith("multipart/"):
        return multipart_model(request.headers.get("Content-Type", ""), body) or request.query.get("model")
    if not body.strip() and "model" in request.query:
        return request.query["model"]
    data = parse_json_object(body)
    refuse_launch_keys(data)
    return data.get("model") or request.query.get("model")


async def _proxy(request: web.Request, spec: ModelSpec, requested: str, path: str,
                 body: bytes | None) -> web.StreamResponse:
    manager = _manager(request)

    async def relay(lease: Lease, into: web.StreamResponse | None = None) -> web.StreamResponse:
        async with lease:
            child = lease.child
            child_id = child.ready_info.get("id") if child.plan.native else None
            rewriter = ModelRewriter(child_id, requested) if child_id and child_id != requested else None
            r = manager.config.router
            return await forward(request, manager.session, child.base_url, path, body,
                                 connect_timeout=r.connect_timeout, read_timeout=r.read_timeout,
                                 rewriter=rewriter, into=into)

    if wants_progress(manager, request, spec, body):
        return await with_progress(request, manager, spec, requested, relay)
    try:
        lease = await manager.acquire(spec.name)
    except ModelUnavailable as e:
        raise HTTPError(503, str(e), "unavailable_error", "model_unavailable") from None
    return await relay(lease)


async def handle_inference(request: web.Request) -> web.StreamResponse:
    body = await read_body(request)
    name = await model_from_request(request, body)
    if request.method == "GET" and not name:
        return await _default_get(request)
    spec = resolve_model(_manager(request), name)
    _check_autoload(request, spec)
    remember_conversation(request, spec.name)
    return await _proxy(request, spec, name, request.path, body or None)


def _check_autoload(request: web.Request, spec: ModelSpec) -> None:
    """`?autoload=false` (llama.cpp's router API; the WebUI sends it with /props):
    answer only from a running model, never load one, and so never evict another."""
    autoload = request.query.get("autoload")
    if autoload is None or autoload in ("true", "1"):
        return
    if _manager(request).state(spec.name) is State.STOPPED:
        raise HTTPError(400, f"model '{spec.name}' is not loaded", code="model_not_loaded")


async def _default_get(request: web.Request) -> web.StreamResponse:
    """GET /props without a model is the router's own; others go to the last model started."""
    manager = _manager(request)
    if request.path == "/props":
        return web.json_response(router_props(manager))
    last = manager.last_spawned
    if last and manager.state(last) is State.READY:
        return await _proxy(request, manager.config.models[last], last, request.path, None)
    raise HTTPError(400, "missing 'model': pass ?model=NAME (no model is running)", code="model_required")


async def handle_upstream(request: web.Request) -> web.StreamResponse:
    """/upstream/{model}/{path}: talk to one child directly (its own web UI, debugging)."""
    manager = _manager(request)
    name = request.match_info["model"]
    spec = resolve_model(manager, name)
    body = await read_body(request)
    return await _proxy(request, spec, name, "/" + request.match_info["path"], body or None)


def router_props(manager: ModelManager) -> dict[str, Any]:
    return {
        "role": "router",
        "max_instances": manager.config.router.models_max,
        "models_autoload": True,
        "model_alias": "llama-router",
        "model_path": "none",
        "default_generation_settings": {"params": {}, "n_ctx": 0},
        "build_info": f"llama-router {__version__}",
        "ui_settings": {},
        "cors_proxy_enabled": False,
    }


def model_entry(manager: ModelManager, spec: ModelSpec, now: int) -> dict[str, Any]:
    state = manager.state(spec.name)
    status: dict[str, Any] = {"value": state.value if state is not State.STOPPING else "loaded",
                              "args": list(spec.args)}
    st = manager.status.get(spec.name)
    if st and st.failed and state is State.STOPPED:
        status.update(failed=True, exit_code=st.exit_code)
    child = manager.children.get(spec.name)
    if state is State.STARTING and child is not None and child.progress is not None:
        status["progress"] = child.progress
    entry: dict[str, Any] = {
        "id": spec.name, "aliases": list(spec.aliases), "tags": [], "object": "model",
        "owned_by": "llama-router", "created": now, "status": status,
    }
    if spec.group:
        entry["group"] = spec.group
    entry.update(model_card(spec))
    if st and st.kv.enabled:
        entry["kv"] = asdict(st.kv)  # KV cache persistence: last save/restore, see docs/kv-persistence.md
    if child is not None and state is State.READY:
        for k, v in child.ready_info.items():
            if k == "meta" and isinstance(v, dict):
                entry["meta"] = {**entry.get("meta", {}), **v}
            elif k not in entry and k not in ("aliases", "tags", "id"):
                entry[k] = v
    return entry


async def handle_models(request: web.Request) -> web.Response:
    manager = _manager(request)
    now = int(time.time())
    data = [model_entry(manager, spec, now) for spec in manager.config.models.values() if not spec.unlisted]
    return web.json_response({"object": "list", "data": data})


async def _model_action_target(request: web.Request) -> ModelSpec:
    return resolve_model(_manager(request), parse_json_object(await read_body(request)).get("model"))


async def handle_models_load(request: web.Request) -> web.Response:
    body = await read_body(request)
    manager = _manager(request)
    spec = resolve_model(manager, parse_json_object(body).get("model"))
    extra = load_overrides(spec, body)
    if extra and manager.state(spec.name) is not State.STOPPED:
        raise HTTPError(409, f"model '{spec.name}' is running; unload it before loading it with other args",
                        code="model_running")
    manager.load(spec.name, extra)
    return web.json_response({"success": True})


async def handle_models_unload(request: web.Request) -> web.Response:
    manager = _manager(request)
    spec = await _model_action_target(request)
    if manager.state(spec.name) is State.STOPPED:
        raise HTTPError(400, f"model '{spec.name}' is not running", code="model_not_running")
    manager.unload(spec.name)
    return web.json_response({"success": True})


async def handle_models_sse(request: web.Request) -> web.StreamResponse:
    manager = _manager(request)
    q = manager.events.subscribe()
    try:
        return await relay(request, q, request.app[SHUTDOWN],
                           lambda msg: {"model": msg["model"], "event": msg["event"], "data": msg["data"]})
    finally:
        manager.events.unsubscribe(q)


async def handle_health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def handle_not_found(request: web.Request) -> web.Response:
    return error_response(404, f"no route for {request.method} {_short(request.path)}", code="not_found")


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/health", handle_health)
    r.add_get("/v1/health", handle_health)
    for path in ("/models", "/v1/models"):
        r.add_get(path, handle_models)
    r.add_post("/models/load", handle_models_load)
    r.add_post("/models/unload", handle_models_unload)
    r.add_get("/models/sse", handle_models_sse)
    for path in POST_ROUTES:
        r.add_post(path, handle_inference)
    r.add_post("/slots/{id}", handle_inference)
    for path in GET_ROUTES:
        r.add_get(path, handle_inference)
    r.add_route("*", "/upstream/{model}/{path:.*}", handle_upstream)


__all__ = ["add_routes", "MANAGER", "Config"]
