"""Ollama's API on the router's port (docs/ollama.md): /api/version, /api/tags,
/api/ps, /api/show, and /api/chat, /api/generate, /api/embed, /api/embeddings,
served by the models' llama-server children in translation; the model
management routes (/api/pull, /api/delete...) are api/ollama_store.py's.

Each module holds one part: the requests' translation (api/ollama_translate.py)
and the replies' (api/ollama_reply.py), both pure; the models as Ollama
describes them (api/ollama_models.py); the way to a child (api/ollama_relay.py);
which model served, a selector's target or a fallback (api/ollama_served.py).

Errors on these paths are Ollama's `{"error": "..."}`: the router's OpenAI-shaped
error answers, those of the access middleware included, are rewritten as they
are sent (`_ollama_errors`, an on_response_prepare signal); an error inside a
stream that already began is one last `{"error": ...}` line, as Ollama sends it.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from router.api.ollama_models import context_length, expires_at, facts, ps_entry, show
from router.api.ollama_relay import load_or_unload, named, read_json, read_whole, resolve, serve, stream, whole
from router.api.ollama_reply import Reply, durations, embeddings
from router.api.ollama_served import Served
from router.api.ollama_store import add_store_routes
from router.api.ollama_translate import (
    CHAT_PATH,
    EMBED_PATH,
    chat_request,
    dimensions,
    embed_inputs,
    generate_request,
    wants_stream,
)
from router.catalogue.config import ModelSpec
from router.core.lifecycle import ttls
from router.core.scheduler import State
from router.core.selector import order
from router.core.snapshot import snapshots
from router.http.access import INFERENCE, PUBLIC, READ, Models, declare
from router.http.api_keys import listed_selectors, may_use
from router.http.app_keys import API_KEY, MANAGER, ROUTER_SETTINGS, state
from router.http.request import default_reply_cap, pinned, take_keep_alive
from router.http.rewrite import rewrite_body
from router.upstream.pool import Reply as ChildReply

OLLAMA_VERSION = "0.12.0"  # the Ollama API this follows (tools, thinking, structured outputs)


@declare(PUBLIC, Models.NONE)
async def handle_version(request: web.Request) -> web.Response:
    return web.json_response({"version": OLLAMA_VERSION})


@declare(READ, Models.FILTERED)
async def handle_tags(request: web.Request) -> web.Response:
    manager, key = request.app[MANAGER], request.get(API_KEY)
    config = manager.config
    rows: list[tuple[ModelSpec, str | None]] = [(s, None) for s in config.models.values()
                                               if not s.unlisted and s.name not in config.missing and may_use(key, s)]
    states = {n: manager.state(n) for n in config.models} if config.selectors else {}
    # A selector is listed with the facts of the target it would serve from now: the first in its
    # strategy's order whose file is there (one with none is not listed, as such a model is not).
    for sel in listed_selectors(key, config):
        target = next((t for t in order(sel, states) if t in config.models and t not in config.missing), None)
        if target is not None:
            rows.append((config.models[target], sel.id))
    return web.json_response({"models": await asyncio.to_thread(lambda: [facts(*row) for row in rows])})


@declare(READ, Models.FILTERED)
async def handle_ps(request: web.Request) -> web.Response:
    """The loaded models, the one expiring last first (as Ollama lists them)."""
    manager, key = request.app[MANAGER], request.get(API_KEY)
    limits, wall, now = ttls(manager), time.time(), time.monotonic()
    rows = []
    for snap in snapshots(manager):
        if snap.spec is None or snap.state is not State.READY or not may_use(key, snap.spec):
            continue
        expires = expires_at(wall, manager.scheduler.idle_for(snap.name, now), limits.get(snap.name, 0.0))
        rows.append((snap.spec, snap.memory.get("figure") or {}, snap.rss_bytes, expires,
                     context_length(snap.argv or (), snap.spec)))
    models = await asyncio.to_thread(lambda: [ps_entry(*row) for row in rows])
    models.sort(key=lambda m: m["expires_at"], reverse=True)
    return web.json_response({"models": models})


@declare(READ, Models.NAMED)
async def handle_show(request: web.Request) -> web.Response:
    data = await read_json(request)
    spec = resolve(request, data.get("model") or data.get("name"))
    manager = request.app[MANAGER]
    child = manager.children.get(spec.name)
    spawn = manager.config.spawn_for(spec)
    argv = child.plan.argv if child is not None else (*spawn.command, *spawn.args, *spec.args)
    return web.json_response(await asyncio.to_thread(show, spec, argv, data.get("verbose") is True))


@declare(INFERENCE, Models.NAMED)
async def handle_chat(request: web.Request) -> web.StreamResponse:
    return await _generation(request, chat=True)


@declare(INFERENCE, Models.NAMED)
async def handle_generate(request: web.Request) -> web.StreamResponse:
    return await _generation(request, chat=False)


@declare(INFERENCE, Models.NAMED)
async def handle_embed(request: web.Request) -> web.StreamResponse:
    return await _embedding(request, legacy=False)


@declare(INFERENCE, Models.NAMED)
async def handle_embeddings(request: web.Request) -> web.StreamResponse:
    return await _embedding(request, legacy=True)


async def _generation(request: web.Request, chat: bool) -> web.StreamResponse:
    """/api/chat and /api/generate: streamed unless `stream: false`; with nothing to
    generate (no messages, no prompt), a load, or with keep_alive 0 an unload. Every
    object names the model that served (a selector's target, a fallback) as /v1 replies do.
    The body is written for the model resolved on arrival (its vision, its reply cap), and
    again for another model that serves instead (a selector's other target, a fallback)."""
    started = time.perf_counter()
    data = await read_json(request)
    model = named(request, pinned(request.app[MANAGER], data.get("model")))  # the active profile's pin first
    spec, requested = model.spec, model.requested
    streamed = wants_stream(data)
    keep = take_keep_alive(data)
    if not (data.get("messages") if chat else (data.get("prompt") or data.get("suffix") or data.get("images"))):
        empty = {"message": {"role": "assistant", "content": ""}} if chat else {"response": ""}
        return await load_or_unload(request, model, keep, {"model": requested, **empty, "done": True})
    def write(model: ModelSpec) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """The child's path and body as `model`'s rules write them (its vision, its filters, its
        reply cap), and the launch options."""
        if chat:
            path, (body, launch) = CHAT_PATH, chat_request(data, bool(model.mmproj), requested)
        else:
            path, body, launch = generate_request(data, bool(model.mmproj), requested)
        rewrite_body(body, model, requested if model is spec else model.name)  # set_params, strip_params...
        default_reply_cap(path, body, request.app[MANAGER].config.max_tokens_default(model))
        body["stream"] = streamed
        if streamed and path == CHAT_PATH:
            body["stream_options"] = {"include_usage": True}  # the counts, in the last chunk
        return path, body, launch

    path, body, launch = write(spec)  # a bad request is a 400 here, before any lease

    async def answer(up: ChildReply, who: Served, stats: dict[str, Any]) -> web.StreamResponse:
        reply = Reply(who.model, chat, native=path != CHAT_PATH, thinking=data.get("think") is not False)
        if streamed:
            return await stream(request, up, reply, who.headers, started, stats)
        return await whole(up, reply, who.headers, started, stats)

    return await serve(request, model, keep, launch, path, body, lambda other: write(other)[1], started, answer)


async def _embedding(request: web.Request, legacy: bool) -> web.StreamResponse:
    """/api/embed (`input`: one text or a list) and the legacy /api/embeddings (`prompt`)."""
    started = time.perf_counter()
    data = await read_json(request)
    model = named(request, pinned(request.app[MANAGER], data.get("model")))  # the active profile's pin first
    keep = take_keep_alive(data)
    inputs, dims = embed_inputs(data, legacy), None if legacy else dimensions(data)
    if not inputs:
        return await load_or_unload(request, model, keep, {"embedding": []} if legacy else {
            "model": model.requested, "embeddings": []})

    async def answer(up: ChildReply, who: Served, stats: dict[str, Any]) -> web.StreamResponse:
        reply = await read_whole(up, stats)
        vectors = embeddings(reply, dims)
        if legacy:
            return web.json_response({"embedding": vectors[0] if vectors else []}, headers=who.headers)
        out = {"model": who.model, "embeddings": vectors,
               **durations(None, reply.get("usage"), time.perf_counter() - started, stats.get("waited", 0.0))}
        out.pop("eval_count", None)
        return web.json_response(out, headers=who.headers)

    def write(served: ModelSpec) -> dict[str, Any]:
        body: dict[str, Any] = {"input": inputs, "encoding_format": "float"}
        rewrite_body(body, served, model.requested if served is model.spec else served.name)  # its filters
        return body

    return await serve(request, model, keep, {}, EMBED_PATH, write(model.spec), write, started, answer)


def is_ollama_port(request: web.Request) -> bool:
    """The request came to router.ollama_port, the second listener for Ollama's clients
    (router/server.py binds it; a change of the key needs a restart, as the port's)."""
    port = state(request, ROUTER_SETTINGS)().ollama_port  # the cluster front has no manager
    sock = request.transport.get_extra_info("sockname") if port and request.transport is not None else None
    return isinstance(sock, tuple) and len(sock) >= 2 and sock[1] == port


# Every path of Ollama's API served here: their errors are Ollama-shaped.
OLLAMA_PATHS: set[str] = set()


async def _ollama_errors(request: web.Request, response: web.StreamResponse) -> None:
    """An error answer on an Ollama path, as Ollama's `{"error": "message"}`."""
    if response.status < 400 or not isinstance(response, web.Response) or not (
            request.path in OLLAMA_PATHS or request.path.startswith("/api/blobs/")):
        return
    body = response.body
    try:
        err = json.loads(body)["error"] if isinstance(body, (bytes, bytearray)) else None
    except (ValueError, KeyError, TypeError):
        return
    if isinstance(err, dict):
        new = json.dumps({"error": str(err.get("message", ""))}).encode()
        response.body = new
        response.headers["Content-Length"] = str(len(new))  # set from the old body before this signal


ROUTES = (("GET", "/api/version", handle_version), ("GET", "/api/tags", handle_tags), ("GET", "/api/ps", handle_ps),
          ("POST", "/api/show", handle_show), ("POST", "/api/chat", handle_chat),
          ("POST", "/api/generate", handle_generate), ("POST", "/api/embed", handle_embed),
          ("POST", "/api/embeddings", handle_embeddings))


def add_ollama_routes(app: web.Application) -> None:
    """Before the WebUI's catch-all."""
    for method, path, handler in ROUTES:
        if method == "GET":
            app.router.add_get(path, handler)  # and HEAD, which clients probe /api/version with
        else:
            app.router.add_route(method, path, handler)
        OLLAMA_PATHS.add(path)
    OLLAMA_PATHS.update(add_store_routes(app))
    app.on_response_prepare.append(_ollama_errors)
