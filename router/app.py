"""Builds the aiohttp application: middleware, routes, and the lifetime of
the shared client session and the model manager."""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

import aiohttp
from aiohttp import web

from .admin import RELOADER, add_admin_routes
from .api import MANAGER, SHUTDOWN, add_routes
from .auth import require_auth
from .config import Config, load_config
from .dashboard import add_dashboard_routes
from .errors import HTTPError, error_response
from .events import EventBus
from .lifecycle import unload_idle
from .logs import add_log_routes
from .kvcache import KVPersistence
from .manager import ModelManager
from .reload import Loader, Reloader
from .streams import add_stream_routes
from .webui import add_webui_routes

log = logging.getLogger("router.app")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes an OpenAI-style JSON error; none escapes as a crash."""
    try:
        return await handler(request)
    except HTTPError as e:
        return e.response()
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return error_response(e.status, e.reason or "error", headers={
            k: v for k, v in e.headers.items() if k.lower() == "allow"})
    except (ConnectionError, aiohttp.ClientConnectionError):
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal router error (see the router log)")


def default_loader(config: Config) -> Loader | None:
    if config.source.startswith("<"):
        return None
    return lambda: load_config(config.source)


def create_app(config: Config, router_port: int | None = None, loader: Loader | None = None) -> web.Application:
    """`loader` re-reads the catalogue for a reload (the CLI's applies its overrides too)."""
    app = web.Application(middlewares=[json_errors, require_auth], client_max_size=config.router.max_body_bytes)
    events = EventBus()

    async def lifetime(app: web.Application):
        # No idle keep-alive connections to children: llama-server serves HTTP with a small
        # thread pool (max(parallel + 4, cores - 1)) and an idle kept-alive connection holds
        # one of its threads for up to 5 s, so a burst of requests stalled behind our own
        # pooled connections. A fresh loopback connection per request costs far less.
        connector = aiohttp.TCPConnector(limit=0, force_close=True, enable_cleanup_closed=True)
        session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        manager = ModelManager(config, session, router_port or config.router.port, events)
        KVPersistence(manager).install()
        app[MANAGER] = manager
        app[RELOADER] = Reloader(manager, loader or default_loader(config))
        idle = asyncio.create_task(unload_idle(manager))
        try:
            yield
        finally:
            idle.cancel()
            await asyncio.gather(idle, return_exceptions=True)
            await app[RELOADER].close()
            await manager.shutdown()
            await session.close()

    app[SHUTDOWN] = asyncio.Event()

    async def on_shutdown(app: web.Application) -> None:
        app[SHUTDOWN].set()  # ends event streams so the drain does not wait on them

    app.on_shutdown.append(on_shutdown)
    app.cleanup_ctx.append(lifetime)
    add_admin_routes(app)
    add_log_routes(app)
    add_routes(app)
    add_stream_routes(app)
    add_dashboard_routes(app)
    add_webui_routes(app, config)  # last: its catch-all serves the WebUI's files
    return app
