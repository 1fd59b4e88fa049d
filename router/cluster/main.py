"""`llama-router --cluster auto|ADDRESS`: join a Ray cluster and serve its hosts on one port.

Start-up connects to Ray (`auto`: the cluster `ray start` began on this
machine; else `HOST:PORT` of its head), makes a fresh per-cluster secret that
every child requires (llama-server's API key, handed to the agents, never
logged or put on a command line), and serves until SIGINT/SIGTERM. Shutdown
stops accepting, lets requests in flight finish for up to
`router.drain_timeout`, has every agent stop its children, then leaves Ray.
SIGHUP reads the catalogue again and hands it to every agent (models whose
launch settings did not change keep running, as on one host). A front that
dies without a goodbye leaves its agents running for `cluster.front_grace`
seconds: a front started again within it adopts them and their loaded models.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import signal
import socket
from collections.abc import Callable
from typing import Any

from aiohttp import web

from router.catalogue.config import Config
from router.catalogue.tls import server_context

log = logging.getLogger("router.cluster")

NAMESPACE = "llama-router"
CONNECT_CHECK_S = 5.0
MISSING_RAY = ("--cluster needs Ray: pip install 'llama-router[cluster]' "
               "(the same Ray and Python version on every node)")


def run(config: Config, address: str, loader: Callable[[], Config] | None = None) -> int:
    """The CLI's hand-over: returns the process exit code."""
    try:
        import ray
    except ImportError:
        log.error("%s", MISSING_RAY)
        return 2
    unreachable = _unreachable(address)
    if unreachable:  # ray.init would retry for minutes: say so now
        log.error("cannot join the Ray cluster at %s: %s", address, unreachable)
        return 1
    try:
        ray.init(address=address, namespace=NAMESPACE, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        log.error("cannot join the Ray cluster at %s: %s", address, e)
        return 1
    try:
        return asyncio.run(serve(config, secrets.token_urlsafe(32), loader=loader))
    finally:
        ray.shutdown()


def _unreachable(address: str) -> str | None:
    """Why the head's HOST:PORT takes no connection (None: it does, or the address is `auto`/`ray://`)."""
    host, sep, port = address.rpartition(":")
    if address == "auto" or address.startswith("ray://") or not sep or not port.isdigit():
        return None
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_CHECK_S).close()
    except OSError as e:
        return e.strerror or str(e)
    return None


async def serve(config: Config, secret: str, stop: asyncio.Event | None = None,
                loader: Callable[[], Config] | None = None) -> int:
    """Serve the cluster's front until a signal or `stop`."""
    from router.cluster.admin import reload_catalogue
    from router.cluster.app import CLUSTER, create_cluster_app

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    app = create_cluster_app(config, secret, loader)
    reloads: set[asyncio.Task[Any]] = set()

    def hangup() -> None:
        task = asyncio.ensure_future(reload_catalogue(app[CLUSTER], loader, "SIGHUP"))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, hangup)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None,
                           shutdown_timeout=config.router.drain_timeout)
    await runner.setup()
    r = config.router
    try:
        try:
            tls = server_context(r.tls_cert, r.tls_key) if r.tls_cert and r.tls_key else None
            site = web.TCPSite(runner, r.host, r.port, reuse_address=True, ssl_context=tls)
            await site.start()
        except OSError as e:  # ssl.SSLError included
            log.error("cannot listen on %s:%d: %s", r.host, r.port, e.strerror or e)
            return 1
        log.info("llama-router (cluster) listening on %s://%s:%d with %d model(s)", "https" if tls else "http",
                 r.host, r.port, len(config.models))
        await stop.wait()
        log.info("shutting down: finishing requests in flight, then stopping every host's models")
        return 0
    finally:
        await runner.cleanup()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
