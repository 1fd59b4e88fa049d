"""The front door in cluster mode: the same API on one port, requests placed on hosts.

A request goes down once: parse it (http/request.py), place it and take a
lease on the chosen host under its queue terms (`ClusterManager.acquire`, a
Ray call that returns the child's base URL once it is ready, and which model
served: a fallback's, docs/scheduling.md), then relay it to that child over
HTTP with the single-host proxy (`forward`), tokens streamed as they come -
never through Ray. A child lost before any byte of its reply is sent once
more (to a new child there, or to another host when its host left); one lost
mid-stream ends the stream with an error event, as on one host.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from router.api.inference import POST_ROUTES, UNKNOWN_MODEL
from router.api.model_api import relay_model_events, router_props
from router.api.profiles import add_profile_routes
from router.catalogue.config import Config
from router.cluster.admin import Loader, add_cluster_admin_routes, load_model, unload_model
from router.cluster.front import ClusterManager
from router.cluster.logs import add_cluster_log_routes
from router.cluster.metrics import ClusterMetrics
from router.cluster.relay import relay, relay_with_progress, wants_progress
from router.cluster.requests import add_request_routes
from router.cluster.requests import install as install_requests
from router.cluster.views import dashboard_rows, model_entries
from router.http.access import INFERENCE, PUBLIC, READ, Models, admin_app, declare, deny_undeclared, require_auth
from router.http.api_keys import KeyLimits
from router.http.app_keys import API_KEY, KEY_LIMITS, REQUEST_ID, ROUTER_SETTINGS, SHUTDOWN
from router.http.errors import HTTPError, json_errors
from router.http.launch_args import load_overrides
from router.http.outcome import Outcome
from router.http.queue_terms import queue_terms
from router.http.request import (
    default_reply_cap,
    parse_json_object,
    pinned_request,
    read_body,
    read_request,
    resolve_name,
    take_keep_alive,
)
from router.http.request_id import with_request_id
from router.http.requests_table import serve_tracked
from router.http.rewrite import rewrite_body
from router.ui.dashboard import handle_page as dashboard_page
from router.ui.webui import add_webui_routes

log = logging.getLogger("router.cluster")

CLUSTER = web.AppKey("cluster", ClusterManager)
CLUSTER_METRICS = web.AppKey("cluster_metrics", ClusterMetrics)


def create_cluster_app(config: Config, secret: str, loader: Loader | None = None) -> web.Application:
    app = web.Application(middlewares=[with_request_id, json_errors, require_auth],
                          client_max_size=config.router.max_body_bytes)
    cluster = ClusterManager(config, secret, config.router.port)
    app[CLUSTER] = cluster
    # API keys as on one host: roles, models, rate and concurrency limits (http/access.py).
    app[ROUTER_SETTINGS] = lambda: cluster.config.router
    app[KEY_LIMITS] = KeyLimits()
    app[SHUTDOWN] = asyncio.Event()  # ends event streams, so the drain does not wait on them

    async def on_shutdown(app: web.Application) -> None:
        app[SHUTDOWN].set()

    app.on_shutdown.append(on_shutdown)
    app[CLUSTER_METRICS] = ClusterMetrics(cluster)
    table = install_requests(app, cluster)  # GET /admin/requests, X-Queue-Position (cluster/requests.py)

    async def lifetime(app: web.Application):
        follow = asyncio.create_task(cluster.run())
        try:
            yield
        finally:
            follow.cancel()
            await asyncio.gather(follow, return_exceptions=True)
            await cluster.shutdown()

    app.cleanup_ctx.append(lifetime)
    r = app.router
    for path in POST_ROUTES:
        r.add_post(path, handle_inference)
    r.add_get("/props", handle_props)
    r.add_get("/metrics", handle_metrics)
    for path in ("/slots", "/lora-adapters"):
        r.add_get(path, handle_inference)
    r.add_get("/v1/models", handle_models)
    r.add_get("/models", handle_models)
    r.add_post("/models/load", handle_models_load)
    r.add_post("/models/unload", handle_models_unload)
    r.add_get("/models/sse", handle_models_sse)
    r.add_get("/dashboard", dashboard_page)
    r.add_get("/dashboard/", dashboard_page)
    r.add_get("/dashboard/api/models", handle_dashboard_models)
    r.add_get("/cluster", handle_cluster)
    r.add_get("/health", handle_health)
    r.add_get("/v1/health", handle_health)
    admin = admin_app()  # /admin: its own middleware, as on one host (router/http/access.py)
    add_cluster_admin_routes(admin, cluster, loader)
    add_request_routes(admin, table, app[CLUSTER_METRICS])
    add_profile_routes(admin, app, cluster)  # the front's own active profile (and llama-swap's /api/profiles)
    app.add_subapp("/admin", admin)
    add_cluster_log_routes(app, cluster)
    add_webui_routes(app, config)  # last: its catch-all takes only what no API route took
    deny_undeclared(app)  # a route without its access declaration fails the start-up
    return app


@declare(INFERENCE, Models.NAMED)
async def handle_inference(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    cluster = request.app[CLUSTER]
    body = await read_body(request, cluster.config.router)
    name, data = await read_request(request, body)
    if request.method == "GET" and not name:
        if request.path == "/metrics":
            return web.Response(body=generate_latest(request.app[CLUSTER_METRICS].registry),
                                headers={"Content-Type": CONTENT_TYPE_LATEST})
        if request.path == "/props":  # llama.cpp's router /props (the WebUI reads it), and where it runs
            return web.json_response({**router_props(cluster.config, {}), "cluster": True,
                                      "hosts": len(cluster.hosts)})
        raise HTTPError(400, "missing 'model': pass ?model=NAME", code="model_required")
    stats: dict[str, Any] = {}
    label = UNKNOWN_MODEL
    outcome = Outcome(stats)
    try:
        with outcome:
            if cluster.profile.spec is not None:  # the active profile's pin comes first (core/profiles.py)
                name, repinned = pinned_request(cluster, name, data)
                if repinned:
                    body = json.dumps(data).encode()
            selector = cluster.config.selectors.get(name) if isinstance(name, str) else None
            states = cluster.states(selector.targets) if selector is not None else None
            spec = resolve_name(cluster.config, name, request.get(API_KEY), states)  # a selector's likely target
            label = spec.name
            queue_terms(request)  # a bad X-Priority or X-Max-Wait is a 400 before anything else
            keep_alive = take_keep_alive(data) if data is not None else None  # the host's agent applies it
            assert isinstance(name, str)
            rewritten = data is not None and rewrite_body(data, spec, name)  # the model's filters, then the cap
            capped = data is not None and default_reply_cap(request.path, data, cluster.config.max_tokens_default(spec))
            if keep_alive is not None or capped or rewritten:  # the child never sees keep_alive
                body = json.dumps(data).encode()
            how = relay_with_progress if wants_progress(cluster, request, spec, body) else relay
            return outcome.served(await serve_tracked(request, spec.name, lambda: how(  # listed in
                request, cluster, spec, name, body or None, stats, keep_alive), stats))  # GET /admin/requests
    finally:
        request.app[CLUSTER_METRICS].observe(stats.get("served_by", label), request.path, outcome.status,
                                             stats.get("host", "-"), started, stats.get("first_byte"),
                                             stats.get("waited"))


@declare(READ, Models.NONE, when={"model": (READ, Models.NAMED)})
async def handle_props(request: web.Request) -> web.StreamResponse:
    """llama.cpp's router /props, or with ?model= that model's."""
    return await handle_inference(request)


@declare(READ, Models.EVERY, when={"model": (READ, Models.NAMED)})
async def handle_metrics(request: web.Request) -> web.StreamResponse:
    """The front's own metrics, every host's and model's; ?model= that model's own."""
    return await handle_inference(request)


@declare(READ, Models.FILTERED, when={"reload": (INFERENCE, Models.EVERY)})
async def handle_models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": model_entries(request.app[CLUSTER],
                                                                      request.get(API_KEY))})


@declare(READ, Models.FILTERED, holds=False)  # open as long as its page
async def handle_models_sse(request: web.Request) -> web.StreamResponse:
    """llama.cpp's /models/sse: each model's state on each host as its agent reports it."""
    cluster = request.app[CLUSTER]
    return await relay_model_events(request, cluster.events, cluster.config)


@declare(READ, Models.EVERY)
async def handle_dashboard_models(request: web.Request) -> web.Response:
    """The dashboard's data: one row per model and host that holds it."""
    return web.json_response({"models": dashboard_rows(request.app[CLUSTER]), "cluster": True,
                              "models_max": request.app[CLUSTER].config.router.models_max, "memory": {},
                              "vram_available": False, "time": time.time()})


@declare(INFERENCE, Models.NAMED)
async def handle_models_load(request: web.Request) -> web.Response:
    """llama.cpp's POST /models/load: start the model on the host placement picks
    (where it is loaded or loading already: nothing to do); `host` names it."""
    cluster = request.app[CLUSTER]
    data = parse_json_object(await read_body(request, cluster.config.router))
    spec = resolve_name(cluster.config, data.get("model"), request.get(API_KEY),
                        cluster.states(cluster.config.models))  # a selector: the target it would choose
    return web.json_response({"success": True, "host": await load_model(cluster, spec, load_overrides(spec, data))})


@declare(INFERENCE, Models.NAMED)
async def handle_models_unload(request: web.Request) -> web.Response:
    """llama.cpp's POST /models/unload: stop it (once idle) on every host that holds it."""
    cluster = request.app[CLUSTER]
    spec = resolve_name(cluster.config, parse_json_object(await read_body(request, cluster.config.router)).get("model"),
                        request.get(API_KEY))
    return web.json_response({"success": True, "hosts": await unload_model(cluster, spec)})


@declare(INFERENCE, Models.EVERY)  # every host's models
async def handle_cluster(request: web.Request) -> web.Response:
    """Every host's last report: budget, memory used, models, queue."""
    hosts = [{"host": h.name, **{k: v for k, v in h.report.items() if k not in ("name", "places")}}
             for h in request.app[CLUSTER].hosts.values()]  # (places: the requests' ids, for the admin only)
    return web.json_response({"hosts": hosts, "request_id": request.get(REQUEST_ID)})


@declare(PUBLIC, Models.NONE)
async def handle_health(request: web.Request) -> web.Response:
    """200 while the front runs, as on one host: requests that come while it waits for the
    hosts' first reports are held, not refused (`starting` says so)."""
    cluster = request.app[CLUSTER]
    live = sum(1 for h in cluster.hosts.values() if h.report)
    return web.json_response({"status": "starting" if cluster.first_reports.starting else "ok", "hosts": live})
