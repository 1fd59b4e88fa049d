"""Builds the aiohttp application: middleware, routes, and the lifetime of
the client to the children and the model manager."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from router.api.activity import ActivityLog
from router.api.admin import add_admin_routes
from router.api.admin_requests import add_request_routes
from router.api.captures import add_capture_routes
from router.api.inference import add_inference_routes
from router.api.logs import add_log_routes
from router.api.media import add_media_routes
from router.api.metrics import METRICS, RouterMetrics, add_metrics_route
from router.api.model_api import add_model_api_routes
from router.api.ollama import add_ollama_routes
from router.api.openapi import add_openapi_route
from router.api.peers import PEERS
from router.api.profiles import add_profile_routes
from router.api.responses import add_response_routes
from router.backend.launch import server_build_info
from router.catalogue.config import Config
from router.catalogue.parse import load_config
from router.core.downloads import Downloads
from router.core.events import EventBus
from router.core.kv_persistence import KVPersistence
from router.core.lifecycle import unload_idle
from router.core.manager import ModelManager
from router.core.peers import Peers
from router.core.reload import Loader, Reloader
from router.http.access import admin_app, deny_undeclared, require_auth
from router.http.api_keys import KeyLimits
from router.http.app_keys import (
    BUILD,
    CONVERSATIONS,
    DOWNLOADS,
    KEY_LIMITS,
    MANAGER,
    RELOADER,
    ROUTER_SETTINGS,
    SHUTDOWN,
    UPSTREAM,
)
from router.http.capture import CAPTURES, CaptureStore, capture_requests
from router.http.conversations import ConversationMap
from router.http.errors import json_errors
from router.http.request_id import with_request_id
from router.http.requests_table import install as install_requests_table
from router.ui.dashboard import add_dashboard_routes
from router.ui.streams import add_stream_routes
from router.ui.webui import add_webui_routes
from router.upstream.client import ChildClient
from router.upstream.pool import UpstreamPool

log = logging.getLogger("router.app")

def default_loader(config: Config) -> Loader | None:
    if config.source.startswith("<"):
        return None
    return lambda: load_config(config.source)


def create_app(config: Config, router_port: int | None = None, loader: Loader | None = None) -> web.Application:
    """`loader` re-reads the catalogue for a reload (the CLI's applies its overrides too)."""
    app = web.Application(middlewares=[with_request_id, json_errors, require_auth, capture_requests],
                          client_max_size=config.router.max_body_bytes)
    events = EventBus()

    async def lifetime(app: web.Application):
        # The one client to the children. Relayed requests that take a slot (generation) get a
        # fresh connection each: an idle kept-alive connection holds one of llama-server's HTTP
        # threads, and under 128+ concurrent streams reused connections were closed under us
        # (502). Light relayed requests (/tokenize, /props...) reuse a few kept-alive connections
        # (router/upstream/pool.py). The manager's own calls (health, /props, slot saves,
        # metrics) take a fresh connection each (router/upstream/client.py).
        app[UPSTREAM] = UpstreamPool()
        manager = ModelManager(config, ChildClient(app[UPSTREAM]), router_port or config.router.port, events)
        KVPersistence(manager).install()
        app[MANAGER] = manager
        app[RELOADER] = Reloader(manager, loader or default_loader(config))
        app[DOWNLOADS] = Downloads(manager, app[RELOADER])
        app[METRICS].watch(manager)
        info = await asyncio.to_thread(server_build_info)
        if info:
            app[BUILD]["build_info"] = info
        app[PEERS] = Peers(ChildClient(app[UPSTREAM]))  # other endpoints' models (router/core/peers.py)
        app[PEERS].sync(config)
        tasks = [asyncio.create_task(unload_idle(manager)), asyncio.create_task(app[METRICS].follow(events)),
                 asyncio.create_task(manager.external.watch()), asyncio.create_task(app[PEERS].watch())]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await app[PEERS].close()
            await app[DOWNLOADS].close()
            await app[RELOADER].close()
            await manager.shutdown()  # saves KV caches through the pool: closed after it
            await app[UPSTREAM].close()

    app[SHUTDOWN] = asyncio.Event()
    app[CONVERSATIONS] = ConversationMap()
    app[ROUTER_SETTINGS] = lambda: app[MANAGER].config.router
    app[KEY_LIMITS] = KeyLimits()
    install_requests_table(app)  # what GET /admin/requests lists; X-Queue-Position
    app[CAPTURES] = CaptureStore()  # requests kept for debugging when router.capture_bytes is set
    app[BUILD] = {}
    app[METRICS] = RouterMetrics(ActivityLog(config.router.activity_size, app[SHUTDOWN]))
    app[METRICS].activity.add_routes(app)

    async def on_shutdown(app: web.Application) -> None:
        app[SHUTDOWN].set()  # ends event streams so the drain does not wait on them

    app.on_shutdown.append(on_shutdown)
    app.cleanup_ctx.append(lifetime)
    admin = admin_app()  # /admin: its own middleware (router/http/access.py)
    add_admin_routes(admin)
    add_capture_routes(admin)
    add_response_routes(app, admin)  # the stateful Responses API (docs/conversations.md)
    add_request_routes(admin)  # the requests waiting and in flight; cancel one
    add_profile_routes(admin, app)  # the profile in force (and llama-swap's /api/profiles)
    app.add_subapp("/admin", admin)
    add_log_routes(app)
    add_model_api_routes(app)
    add_inference_routes(app)
    add_media_routes(app)  # speech, images, sdapi and the versionless /v/ paths
    add_metrics_route(app)
    add_stream_routes(app)
    add_dashboard_routes(app)
    add_openapi_route(app)
    add_ollama_routes(app)  # Ollama's API (docs/ollama.md)
    add_webui_routes(app, config)  # last: its catch-all serves the WebUI's files
    deny_undeclared(app)  # a route without its access declaration fails the start-up
    return app
