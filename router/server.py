"""Run the router: bind, serve, and shut down gracefully on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from .api import MANAGER
from .app import create_app
from .config import Config

log = logging.getLogger("router")

DRAIN_TIMEOUT = 30.0


async def serve(config: Config, stop: asyncio.Event | None = None) -> int:
    """Serve until a signal or `stop`; return the process exit code."""
    stop = stop or asyncio.Event()
    app = create_app(config)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None,
                           shutdown_timeout=DRAIN_TIMEOUT)
    await runner.setup()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        site = web.TCPSite(runner, config.router.host, config.router.port, reuse_address=True)
        try:
            await site.start()
        except OSError as e:
            log.error("cannot listen on %s:%d: %s", config.router.host, config.router.port, e.strerror or e)
            return 1
        if config.router.host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("listening on %s: the API is reachable from other machines", config.router.host)
        names = ", ".join(config.models) or "(none)"
        log.info("llama-router listening on http://%s:%d with %d model(s): %s",
                 config.router.host, config.router.port, len(config.models), names)
        await stop.wait()
        log.info("shutting down: finishing requests in flight, then stopping models")
    finally:
        await runner.cleanup()  # stops accepting, drains, then runs the app's cleanup (stops children)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 0


__all__ = ["serve", "MANAGER"]
