"""Run the router: load the start-up model, bind, serve, reload on SIGHUP,
and shut down gracefully on SIGINT/SIGTERM (stop accepting, let requests in
flight finish up to router.drain_timeout, stop every child, exit 0)."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from .admin import RELOADER
from .api import MANAGER
from .app import create_app
from .auth import exposure_warning
from .config import Config
from .lifecycle import StartupError, load_startup_model
from .reload import Loader

log = logging.getLogger("router")


async def serve(config: Config, stop: asyncio.Event | None = None, loader: Loader | None = None) -> int:
    """Serve until a signal or `stop`; return the process exit code."""
    stop = stop or asyncio.Event()
    app = create_app(config, loader=loader)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None,
                           shutdown_timeout=config.router.drain_timeout)
    await runner.setup()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    reloader = app[RELOADER]
    reloads: set[asyncio.Task] = set()

    def on_hangup() -> None:
        task = asyncio.ensure_future(reloader.reload("SIGHUP"))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    try:
        starting = asyncio.ensure_future(load_startup_model(app[MANAGER]))
        interrupted = asyncio.ensure_future(stop.wait())
        await asyncio.wait({starting, interrupted}, return_when=asyncio.FIRST_COMPLETED)
        interrupted.cancel()
        if not starting.done():
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            return 0
        try:
            starting.result()
        except StartupError as e:
            log.error("cannot start: %s", e)
            return 1
        site = web.TCPSite(runner, config.router.host, config.router.port, reuse_address=True)
        try:
            await site.start()
        except OSError as e:
            log.error("cannot listen on %s:%d: %s", config.router.host, config.router.port, e.strerror or e)
            return 1
        warning = exposure_warning(config.router.host, config.router.api_keys)
        if warning:
            log.warning("%s", warning)
        reloader.start_watching()
        names = ", ".join(config.models) or "(none)"
        log.info("llama-router listening on http://%s:%d with %d model(s): %s%s",
                 config.router.host, config.router.port, len(config.models), names,
                 "; admin API enabled" if config.router.admin_token else "")
        await stop.wait()
        log.info("shutting down: finishing requests in flight (up to %g s), then stopping models",
                 config.router.drain_timeout)
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        for task in list(reloads):
            task.cancel()
        await runner.cleanup()  # stops accepting, drains, then runs the app's cleanup (stops children)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 0


__all__ = ["serve", "MANAGER"]
