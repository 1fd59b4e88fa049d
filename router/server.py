"""Run the router: start up, serve until a signal, shut down gracefully.

`Server` follows uvicorn's shape: `startup()` loads the start-up model and
binds the port, `main_loop()` waits for SIGINT/SIGTERM (SIGHUP reloads the
catalogue), and `shutdown()` stops accepting, lets requests in flight finish
for up to router.drain_timeout, then stops every child. A second
SIGINT/SIGTERM during the drain forces a fast exit: children are killed at
once (no KV cache save), but still killed, never left running.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl

from aiohttp import web

from router.app import create_app
from router.catalogue.config import Config
from router.catalogue.tls import server_context
from router.connguard import ConnectionGuard, GuardedRunner
from router.core.lifecycle import StartupError, load_startup_model, preload_models
from router.core.reload import Loader
from router.http.access import exposure_warning
from router.http.app_keys import MANAGER, RELOADER

log = logging.getLogger("router")

FORCED_EXIT_CODE = 130


class Server:
    def __init__(self, config: Config, stop: asyncio.Event | None = None, loader: Loader | None = None):
        self.config = config
        self.stop = stop or asyncio.Event()
        self.force_exit = asyncio.Event()
        self.app = create_app(config, loader=loader)
        guard = ConnectionGuard(config.router.header_timeout, config.router.max_client_connections)
        self.runner = GuardedRunner(self.app, guard, handler_cancellation=True, access_log=None,
                                    shutdown_timeout=config.router.drain_timeout)
        self._reloads: set[asyncio.Task[object]] = set()

    # ----- signals ---------------------------------------------------------
    def _on_stop_signal(self) -> None:
        if self.stop.is_set():
            log.warning("second signal: exiting now, killing the models without waiting")
            self.force_exit.set()
        self.stop.set()

    def _on_hangup(self) -> None:
        task = asyncio.ensure_future(self.app[RELOADER].reload("SIGHUP"))
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_stop_signal)
        loop.add_signal_handler(signal.SIGHUP, self._on_hangup)

    def _remove_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)

    # ----- the three phases ------------------------------------------------
    async def startup(self) -> int | None:
        """Load the start-up model, then bind. None when serving; else the exit code."""
        await self.runner.setup()
        self._install_signals()
        starting = asyncio.ensure_future(load_startup_model(self.app[MANAGER]))
        interrupted = asyncio.ensure_future(self.stop.wait())
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
        r = self.config.router
        try:  # checked when the catalogue was read; a file changed since is still refused clearly
            tls = server_context(r.tls_cert, r.tls_key) if r.tls_cert and r.tls_key else None
        except OSError as e:  # ssl.SSLError included
            log.error("cannot use the TLS certificate %s and key %s: %s", r.tls_cert, r.tls_key, e)
            return 2
        site = web.TCPSite(self.runner, r.host, r.port, reuse_address=True, ssl_context=tls)
        try:
            await site.start()
        except OSError as e:
            log.error("cannot listen on %s:%d: %s", r.host, r.port, e.strerror or e)
            return 1
        if r.ollama_port and not await self._listen_for_ollama(r.host, r.ollama_port, r.port, tls):
            return 1
        warning = exposure_warning(r.host, r.api_keys, tls=tls is not None)
        if warning:
            log.warning("%s", warning)
        self.app[RELOADER].start_watching()
        preload_models(self.app[MANAGER])
        log.info("llama-router listening on %s://%s:%d with %d model(s): %s%s",
                 "https" if tls else "http", r.host, r.port,
                 len(self.config.models), ", ".join(self.config.models) or "(none)",
                 "; admin API enabled" if r.admin_token or any(
                     getattr(k, "role", None) == "admin" for k in r.api_keys) else "")
        return None

    async def _listen_for_ollama(self, host: str, port: int, main_port: int, tls: ssl.SSLContext | None) -> bool:
        """router.ollama_port: the same application on a second port, where Ollama's clients
        look (docs/ollama.md)."""
        if port == main_port:
            log.error("router.ollama_port %d is router.port: give it a port of its own (11434, Ollama's)", port)
            return False
        try:
            await web.TCPSite(self.runner, host, port, reuse_address=True, ssl_context=tls).start()
        except (OSError, OverflowError) as e:  # OverflowError: --ollama-port past 65535
            log.error("cannot listen on %s:%d (router.ollama_port): %s", host, port, getattr(e, "strerror", None) or e)
            return False
        log.info("Ollama's API also on %s://%s:%d", "https" if tls else "http", host, port)
        return True

    async def main_loop(self) -> None:
        await self.stop.wait()
        log.info("shutting down: finishing requests in flight (up to %g s), then stopping models "
                 "(a second Ctrl-C exits at once)", self.config.router.drain_timeout)

    async def shutdown(self) -> int:
        """Stop accepting, drain, stop the children; a forced exit kills them at once."""
        for task in list(self._reloads):
            task.cancel()
        cleanup = asyncio.ensure_future(self.runner.cleanup())  # drains, then stops the children
        forced = asyncio.ensure_future(self.force_exit.wait())
        try:
            await asyncio.wait({cleanup, forced}, return_when=asyncio.FIRST_COMPLETED)
            if not cleanup.done():
                manager = self.app.get(MANAGER)
                if manager is not None:
                    await manager.kill_all()
                cleanup.cancel()
                await asyncio.gather(cleanup, return_exceptions=True)
                return FORCED_EXIT_CODE
            cleanup.result()
            return 0
        finally:
            forced.cancel()
            self._remove_signals()

    async def serve(self) -> int:
        try:
            code = await self.startup()
            if code is None:
                await self.main_loop()
        except BaseException:
            await self.shutdown()
            raise
        forced = await self.shutdown()
        return forced if code is None or forced else code


async def serve(config: Config, stop: asyncio.Event | None = None, loader: Loader | None = None) -> int:
    """Serve until a signal or `stop`; return the process exit code."""
    return await Server(config, stop, loader).serve()


def run(config: Config, loader: Loader | None = None) -> int:
    """The process's event loop, running `serve`: uvloop where it is installed (a
    dependency on Linux and macOS; `python -m bench.event_loop`: about 3% more light
    requests per second and 4% less router CPU per request, docs/performance.md),
    unless LLAMA_ROUTER_LOOP=asyncio asks for the standard loop."""
    factory = None
    if os.environ.get("LLAMA_ROUTER_LOOP", "uvloop") != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(serve(config, loader=loader))
