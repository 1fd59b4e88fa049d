"""Builds the aiohttp application: middleware, routes, and the lifetime of
the shared client session and the model manager."""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

import aiohttp
from aiohttp import web

from .api import MANAGER, SHUTDOWN, add_routes
from .config import Config
from .dashboard import add_dashboard_routes
from .errors import HTTPError, error_response
from .events import EventBus
from .manager import ModelManager
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


def create_app(config: Config, router_port: int | None = None) -> web.Application:
    app = web.Application(middlewares=[json_errors], client_max_size=config.router.max_body_bytes)
    events = EventBus()

    async def lifetime(app: web.Application):
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None, enable_cleanup_closed=True)
        session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        manager = ModelManager(config, session, router_port or config.router.port, events)
        app[MANAGER] = manager
        try:
            yield
        finally:
            await manager.shutdown()
            await session.close()

    app[SHUTDOWN] = asyncio.Event()

    async def on_shutdown(app: web.Application) -> None:
        app[SHUTDOWN].set()  # ends event streams so the drain does not wait on them

    app.on_shutdown.append(on_shutdown)
    app.cleanup_ctx.append(lifetime)
    add_routes(app)
    add_stream_routes(app)
    add_dashboard_routes(app)
    add_webui_routes(app, config)  # last: its catch-all serves the WebUI's files
    return app
