"""How the cluster front relays one request: a lease on the host that placement chose,
under the request's queue terms (`ClusterManager.acquire`, a Ray call that returns the
child's base URL once it is ready, and which model served: a fallback's, a selector's
target), then the request relayed to that child over HTTP with the single-host proxy
(`forward`), tokens streamed as they come - never through Ray. A child lost before any
byte of its reply is sent once more (to a new child there, or to another host when its
host left); one lost mid-stream ends the stream with an error event, as on one host.

A streamed chat whose model is loaded on no host, with swap progress on
(`notify_model_swap`), gets its event stream at once and is told what it waits for
while it waits (http/swap_progress.py, as on one host): the load, other models
unloaded on the hosts, its place in its host's queue, then the host that serves it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiohttp import web

from router.api.inference import is_light
from router.catalogue.config import ModelSpec
from router.cluster.front import ClusterManager, RemoteLease
from router.core.manager import ModelUnavailable
from router.core.scheduler import State
from router.http.api_keys import may_use
from router.http.app_keys import API_KEY
from router.http.errors import error_response
from router.http.fallback_headers import served_headers
from router.http.proxy import ModelRewriter, UpstreamLost, forward
from router.http.queue_terms import queue_terms
from router.http.requests_table import entry_of, unavailable
from router.http.swap_progress import CHAT_PATHS, place_text, stream_progress, streamed

log = logging.getLogger("router.cluster")


def wants_progress(cluster: ClusterManager, request: web.Request, spec: ModelSpec, body: bytes | None) -> bool:
    """A streamed chat, swap progress on for its model, and no host that would serve it at
    once (the model loaded there, no request waiting for it, a slot free: the last reports)."""
    if not cluster.config.swap_progress(spec) or request.path not in CHAT_PATHS:
        return False
    limit = spec.concurrency_limit
    for host in list(cluster.hosts.values()):
        m = host.report.get("models", {}).get(spec.name) if not host.gone.is_set() else None
        if m and m.get("state") == "loaded" and not m.get("waiting") and not (limit and m.get("inflight", 0) >= limit):
            return False  # served at once: nothing to tell
    return streamed(body)


async def relay_with_progress(request: web.Request, cluster: ClusterManager, spec: ModelSpec, requested: str,
                              body: bytes | None, stats: dict[str, Any],
                              keep_alive: float | None = None) -> web.StreamResponse:
    """`relay`, its wait told in the event stream (http/swap_progress.py); a lease that does
    not come (a failed load, a deadline passed) is the stream's last event, an error."""
    def opening() -> list[str]:  # loaded: its slots are busy, it waits its turn
        loaded = cluster.states([spec.name])[spec.name] is State.READY
        return [f"{'waiting for' if loaded else 'loading'} {spec.name}"]

    async def relay_into(lease: RemoteLease, into: web.StreamResponse) -> web.StreamResponse:
        return await relay(request, cluster, spec, requested, body, stats, keep_alive, lease, into)

    acquiring = leased(request, cluster, spec, requested, stats, keep_alive)
    return await stream_progress(request, cluster.events, acquiring, spec.name, requested, opening,
                                 lambda: place_text(request, None), relay_into, stats,
                                 lambda lease: f"{lease.model} ready on {lease.host.name}")


async def relay(request: web.Request, cluster: ClusterManager, spec: ModelSpec, requested: str,
                body: bytes | None, stats: dict[str, Any], keep_alive: float | None = None,
                first: RemoteLease | None = None, into: web.StreamResponse | None = None) -> web.StreamResponse:
    """The request relayed to the child of a lease (`first`, one already taken; else one taken
    here). `into`: an event stream already sent to the client (swap progress); the child's
    stream continues it, and it is never sent twice."""
    light = is_light(request)
    lost: Exception | None = None
    for attempt in range(2):
        if attempt == 0 and first is not None:
            lease = first
        else:
            try:
                lease = await leased(request, cluster, spec, requested, stats, keep_alive)
            except ModelUnavailable as e:
                raise unavailable(e, request) from None  # 429 (queue full), 503 (+ Retry-After), 404
        served = cluster.config.models.get(lease.model, spec)  # a fallback's or a selector's choice
        if lease.stands_in:
            stats["served_by"] = lease.model  # the metrics' model: the one that served (as on one host)
        named = served.name if lease.stands_in else requested  # the reply's "model"
        rewriter = ModelRewriter(lease.child_id, named) if lease.child_id and lease.child_id != named else None
        connect_timeout, read_timeout = cluster.config.timeouts(served)
        try:
            return await forward(request, lease.host.client, lease.base_url, request.path, body, light=light,
                                 replayable=attempt == 0 and into is None, connect_timeout=connect_timeout,
                                 read_timeout=read_timeout, rewriter=rewriter, into=into, stats=stats,
                                 reply_headers=served_headers(lease.fell_from, lease.fallback_reason,
                                                              lease.selector))
        except UpstreamLost as e:  # the child is gone, or its host left and its client was closed
            lost = e
        finally:
            lease.release()
        if attempt or not await cluster.settle(lease):
            break
        log.warning("[%s] child on %s lost before replying (%s): placing the request again", spec.name,
                    lease.host.name, lost)
    return error_response(502, f"upstream model server failed: {lost}", "upstream_error")


async def leased(request: web.Request, cluster: ClusterManager, spec: ModelSpec, requested: str,
                 stats: dict[str, Any], keep_alive: float | None) -> RemoteLease:
    """The lease for `requested` (a selector, chosen again at the front) or `spec`, under the
    request's queue terms (priority, tenant, deadline: docs/scheduling.md); `stats` receives
    how long it waited and the host. ModelUnavailable as one host's manager raises it. A
    selector's targets are those the request's API key may use (docs/scheduling.md#selectors)."""
    waiting = time.perf_counter()
    model = requested if requested in cluster.config.selectors else spec.name
    light = is_light(request)
    terms = queue_terms(request)
    key, models = request.get(API_KEY), cluster.config.models
    entry = entry_of(request)  # listed in GET /admin/requests: with its host, once placed
    if entry is not None:
        entry.state = "waiting"  # (again, when a lost child's request is placed once more)

    def may_serve(name: str) -> bool:
        return name in models and may_use(key, models[name])

    def placed(host: str) -> None:
        if entry is not None:
            entry.host = host

    lease = await cluster.acquire(model, light, keep_alive, terms.priority, terms.tenant,
                                  terms.deadline(time.monotonic()),
                                  may_serve if key is not None and key.models else None,
                                  entry.id if entry is not None else None, placed)
    if entry is not None:
        entry.state, entry.joined = "in_flight", lease.joined  # X-Queue-Position: its place on joining
    stats["waited"], stats["host"] = time.perf_counter() - waiting, lease.host.name
    return lease
