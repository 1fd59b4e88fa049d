"""Inference routes: every llama-server endpoint, sent to the child of the
model the request names, and /upstream/{model}/... straight to one child."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from router.api.metrics import METRICS
from router.api.model_api import router_props
from router.api.peers import peer_route, relay_to_peer
from router.catalogue.config import ModelSpec
from router.core.manager import Lease, ModelUnavailable
from router.core.scheduler import State
from router.http.access import INFERENCE, READ, Models, declare
from router.http.api_keys import has_role, may_use
from router.http.app_keys import API_KEY, BUILD, CONVERSATIONS, MANAGER, REQUEST_ID, UPSTREAM
from router.http.errors import HTTPError, error_response
from router.http.fallback_headers import served_headers
from router.http.outcome import Outcome
from router.http.proxy import ModelRewriter, UpstreamLost, forward
from router.http.request import (
    default_reply_cap,
    pinned_request,
    pinned_upstream,
    read_body,
    read_request,
    servable_model,
    take_keep_alive,
)
from router.http.requests_table import acquire, lease_at_once, serve_tracked, unavailable
from router.http.rewrite import rewrite_body
from router.http.swap_progress import wants_progress, with_progress

log = logging.getLogger("router.proxy")

# POST endpoints of llama-server that carry the model in the body.
POST_ROUTES = (
    "/completion", "/completions", "/v1/completions", "/chat/completions", "/v1/chat/completions",
    "/v1/chat/completions/control",
    "/v1/responses", "/responses", "/v1/messages", "/v1/messages/count_tokens", "/infill",
    "/embedding", "/embeddings", "/v1/embeddings", "/rerank", "/reranking", "/v1/rerank",
    "/v1/reranking", "/tokenize", "/detokenize", "/apply-template", "/v1/audio/transcriptions",
    "/lora-adapters",
)
# Served by api/responses.py (stored responses, previous_response_id), which relays them through here.
STATEFUL_ROUTES = ("/v1/responses", "/responses")
UNKNOWN_MODEL = "(unknown)"  # the model label of requests that named no model the router knows
RETRY_AFTER_S = "1"  # a full queue drains in about a request's time
CHILD_GONE_WAIT_S = 2.0  # how long a lost connection may take to show as the child's exit
# Endpoints that use none of the child's slots: they skip its concurrency limit.
LIGHT_PATHS = frozenset({"/tokenize", "/detokenize", "/apply-template", "/v1/messages/count_tokens", "/props",
                         "/slots", "/metrics", "/lora-adapters"})
# GET endpoints that take the model from ?model= (api/metrics.py registers /metrics).
GET_ROUTES = ("/props", "/slots", "/metrics", "/lora-adapters")
# llama-server's LLAMA_SERVER_DEBUG_FAKE_TIMING (set by llama.cpp's own router tests): every
# relayed request holds its model for 2 s before it is sent, so a test can count on it being busy.
FAKE_TIMING_S = 2.0 if os.environ.get("LLAMA_SERVER_DEBUG_FAKE_TIMING") else 0.0


async def proxy_to_model(request: web.Request, spec: ModelSpec, requested: str, path: str,
                         body: bytes | None, stats: dict[str, Any] | None = None,
                         body_for: Callable[[ModelSpec], bytes] | None = None) -> web.StreamResponse:
    """Wait for `spec`'s child (loading it, swapping others out), then relay the request.
    `stats` receives how long it waited, and what forward() records. `body_for`: the body
    written for another model, when a fallback or a selector's other target serves."""
    manager = request.app[MANAGER]

    async def relay(lease: Lease, into: web.StreamResponse | None = None) -> web.StreamResponse:
        for replay in (False, True):
            async with lease:
                if FAKE_TIMING_S and not replay:
                    await asyncio.sleep(FAKE_TIMING_S)  # in flight meanwhile: the model counts as busy
                child = lease.child
                child_id = child.ready_info.get("id") if child.plan.native else None
                served = manager.config.models.get(lease.model, spec)  # a fallback's, when one serves
                if stats is not None and lease.stands_in:
                    stats["served_by"] = lease.model  # the metrics' and keep_alive's model: the one that served
                named = served.name if lease.stands_in else requested  # the reply's "model"
                rewriter = ModelRewriter(child_id, named) if child_id and child_id != named else None
                connect_timeout, read_timeout = manager.config.timeouts(served)
                sent = body if body_for is None or served is spec else body_for(served)
                try:
                    return await forward(request, request.app[UPSTREAM], child.base_url, path, sent, light=light,
                                         # a server with no process here (a `url` model) is never restarted
                                         replayable=not replay and into is None and child.pid is not None,
                                         connect_timeout=connect_timeout, read_timeout=read_timeout,
                                         rewriter=rewriter, into=into, stats=stats,
                                         upstream_headers=dict(child.plan.headers),
                                         reply_headers=fallback_headers(lease))
                except UpstreamLost as e:
                    lost = e
            # The child died before answering: once it is known gone, send the request again
            # (its restart is the scheduler's usual load); a child that lives on was not lost.
            if not await manager.child_gone(served.name, child, CHILD_GONE_WAIT_S):
                break
            log.warning("[%s] child lost before replying (%s): replaying the request once", spec.name, lost)
            try:
                lease = await acquire(request, spec, light=light, name=requested)
            except ModelUnavailable as e:
                raise unavailable(e, request) from None
        return error_response(502, f"upstream model server failed: {lost}", "upstream_error")

    light = is_light(request, path)
    if wants_progress(manager, request, spec, body):
        return await with_progress(request, manager, spec, requested, relay, stats)
    if light and (lease_now := lease_at_once(request, spec, requested)) is not None:
        if stats is not None:
            stats["waited"] = 0.0  # its model serves it now: no queue, nothing to wait for
        return await relay(lease_now)
    waiting = time.perf_counter()
    try:
        lease = await acquire(request, spec, light=light, name=requested)  # under the request's terms
        if stats is not None:
            stats["waited"] = time.perf_counter() - waiting
    except ModelUnavailable as e:
        raise unavailable(e, request) from None  # 429 (queue full), 503 (+ Retry-After past a deadline), 404
    return await relay(lease)


def is_light(request: web.Request, path: str | None = None) -> bool:
    """Whether the request takes none of its child's slots (LIGHT_PATHS, and every GET)."""
    return (request.path if path is None else path) in LIGHT_PATHS or request.method == "GET"


def fallback_headers(lease: Lease) -> dict[str, str]:
    """Which model the request asked for, and why another served it; the selector it named."""
    return served_headers(lease.fell_from, lease.fallback_reason, lease.selector)


@declare(INFERENCE, Models.NAMED)
async def handle_inference(request: web.Request, body: bytes | None = None,
                           stats: dict[str, Any] | None = None) -> web.StreamResponse:
    """`body`: the request's, as another route rewrote it (api/responses.py); `stats`: what
    forward() records, given by that route to read the reply (its "reply" list: every chunk)."""
    started = time.perf_counter()
    body = await read_body(request) if body is None else body
    name, data = await read_request(request, body)
    if request.method == "GET" and not name:
        return await _default_get(request)
    manager = request.app[MANAGER]
    stats = {} if stats is None else stats
    label, keep_alive = UNKNOWN_MODEL, None
    outcome = Outcome(stats)
    try:
        with outcome:
            if manager.profile.spec is not None:  # the active profile's pin comes first (core/profiles.py)
                name, repinned = pinned_request(manager, name, data)
                if repinned:
                    body = json.dumps(data).encode()
            route = await peer_route(request, name)  # a peer's model (api/peers.py); None for the catalogue's
            if route is not None:
                label = route.fqn
                assert isinstance(name, str)
                return outcome.served(await relay_to_peer(request, route, name, body, data, stats))
            spec = servable_model(manager, name, request.get(API_KEY))
            label = spec.name
            assert isinstance(name, str)  # resolve_model accepted it
            _check_autoload(request, spec)
            keep_alive = take_keep_alive(data) if data is not None else None
            body_for = _rewriter_for(request, data, spec, name)  # another model may serve: its own rules
            rewritten = data is not None and rewrite_body(data, spec, name)  # the model's filters, then the cap
            capped = data is not None and default_reply_cap(request.path, data, manager.config.max_tokens_default(spec))
            if keep_alive is not None or capped or rewritten:
                body = json.dumps(data).encode()
            if keep_alive is not None:
                manager.keep_alive(spec.name, keep_alive)
            request.app[CONVERSATIONS].remember_request(request, spec.name)
            if is_light(request) and manager.state(spec.name) is State.READY:
                # Answered at once (it takes no slot, waits for nothing): not worth listing.
                return outcome.served(await proxy_to_model(request, spec, name, request.path, body or None, stats,
                                                           body_for))
            return outcome.served(await serve_tracked(request, spec.name, lambda: proxy_to_model(  # listed in
                request, spec, name, request.path, body or None, stats, body_for), stats))  # GET /admin/requests
    finally:
        served_by = stats.get("served_by")
        if served_by is not None and served_by != label:  # a fallback or a selector's target served
            label = served_by
            if keep_alive:
                manager.keep_alive(label, keep_alive)
        request.app[METRICS].observe(label, request.path, outcome.status, started, stats.get("first_byte"),
                                     stats.get("waited"), stats.get("head", b""), stats.get("tail", b""),
                                     stats.get("streamed", False), request.get(REQUEST_ID, ""))
        if keep_alive == 0:
            manager.unload(label, "keep_alive")  # once idle, after this reply


def _rewriter_for(request: web.Request, data: dict[str, Any] | None, spec: ModelSpec,
                  name: str) -> Callable[[ModelSpec], bytes] | None:
    """For a request that another model may serve (`spec` has fallbacks, or `name` is a
    selector): the body as that model's rules write it (its filters, its reply cap) from the
    body as the client sent it. None when only `spec` serves."""
    config = request.app[MANAGER].config
    if data is None or not (spec.fallbacks or name in config.selectors):
        return None
    sent = dict(data)  # the rules set and remove top-level keys only

    def body_for(served: ModelSpec) -> bytes:
        again = dict(sent)
        rewrite_body(again, served, served.name)
        default_reply_cap(request.path, again, config.max_tokens_default(served))
        return json.dumps(again).encode()

    return body_for


def _check_autoload(request: web.Request, spec: ModelSpec) -> None:
    """`?autoload=false` (llama.cpp's router API; the WebUI sends it with /props), or
    `--no-models-autoload` without `?autoload=true`: answer only from a running model,
    never load one, and so never evict another."""
    if spec.url is not None:
        return  # served by a server someone else runs: nothing to load
    autoload = request.query.get("autoload")
    key = request.get(API_KEY)
    if key is not None and not has_role(key, INFERENCE):
        autoload = "false"  # a read key looks (/props, /metrics), it never loads a model
    if autoload in ("true", "1") or (autoload is None and request.app[MANAGER].config.router.models_autoload):
        return
    if request.app[MANAGER].state(spec.name) is State.STOPPED:
        raise HTTPError(400, f"model '{spec.name}' is not loaded", code="model_not_loaded")


async def _default_get(request: web.Request) -> web.StreamResponse:
    """GET /props without a model is the router's own; /slots and /lora-adapters go to the
    last model started (GET /metrics without one: api/metrics.py)."""
    manager = request.app[MANAGER]
    if request.path == "/props":
        return web.json_response(router_props(manager.config, request.app[BUILD]))
    last = manager.last_spawned
    if last and manager.state(last) is State.READY and may_use(request.get(API_KEY), manager.config.models[last]):
        return await proxy_to_model(request, manager.config.models[last], last, request.path, None)
    raise HTTPError(400, "missing 'model': pass ?model=NAME (no model is running)", code="model_required")


@declare(READ, Models.NONE, when={"model": (READ, Models.NAMED)})
async def handle_props(request: web.Request) -> web.StreamResponse:
    """GET /props: the router's own, or with ?model= that model's (a read key's never loads it)."""
    return await handle_inference(request)


@declare(INFERENCE, Models.NAMED)
async def handle_upstream(request: web.Request) -> web.StreamResponse:
    """/upstream/{model}/{path}: talk to one child directly (its own web UI, debugging)."""
    # The active profile's pin first (core/profiles.py): it may also change the path.
    name, path = pinned_upstream(request.app[MANAGER], request.match_info["model"], "/" + request.match_info["path"])
    if name in request.app[MANAGER].config.selectors:  # as llama-swap: one child, named as it is
        raise HTTPError(404, f"model '{name}' is a selector: /upstream/ talks to one model by its name",
                        "invalid_request_error", "model_not_found")
    spec = servable_model(request.app[MANAGER], name, request.get(API_KEY))
    body = await read_body(request)
    return await proxy_to_model(request, spec, name, path, body or None)


def add_inference_routes(app: web.Application) -> None:
    r = app.router
    for path in POST_ROUTES:
        if path not in STATEFUL_ROUTES:
            r.add_post(path, handle_inference)
    r.add_post("/slots/{id}", handle_inference)
    r.add_get("/props", handle_props)
    for path in ("/slots", "/lora-adapters"):
        r.add_get(path, handle_inference)
    r.add_route("*", "/upstream/{model}/{path:.*}", handle_upstream)
