"""The requests the router is serving, waiting for their model or in flight:
where each stands (X-Queue-Position, the swap-progress text), the operator's
list of them (GET /admin/requests) and their cancellation
(DELETE /admin/requests/{id}). Never a request's text: its id (X-Request-Id),
model, key, age and state. See docs/scheduling.md.

Every request that waits for a model goes through `acquire` here, with the
terms of http/queue_terms.py, and is served inside `serve_tracked`, which
turns an operator's cancellation into a clean ending: a 499 reply, or a last
error event in a stream that began.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from router.catalogue.config import ApiKey, ModelSpec
from router.core.fallback import FILE_MISSING
from router.core.manager import Lease, ModelManager, ModelUnavailable
from router.core.scheduler import State
from router.http.api_keys import as_key, may_use
from router.http.app_keys import API_KEY, MANAGER, REQUEST_ID, ROUTER_SETTINGS, state, state_or_none
from router.http.errors import HTTPError, error_body
from router.http.queue_terms import MAX_WAIT_HEADER, PRIORITY_HEADER, queue_terms

POSITION_HEADER = "X-Queue-Position"
CANCELLED = 499  # the status of a request an operator cancelled (nginx's "client closed request")
RETRY_AFTER_BUSY_S = "1"  # a full queue drains in about a request's time
RETRY_AFTER_EXPIRED_S = 5  # past a deadline, when no estimate is known
EWMA = 0.2  # the weight of the last request in a model's typical request time


@dataclass(eq=False)
class Tracked:
    """One request being served."""

    id: str
    model: str
    key: str | None  # "api_keys[2]" (its index, never the secret); None: no key
    since: float  # time.monotonic() at arrival
    task: asyncio.Task[Any] | None
    ollama: bool = False  # its errors are Ollama's shape
    ticket: int | None = None
    state: str = "waiting"  # "waiting" | "in_flight"
    joined: int = 0  # its place in its model's queue when it joined (0: served at once)
    granted: float | None = None  # when a request that takes a slot was granted (light ones: never)
    last_estimate: float | None = None
    cancelled: bool = False
    response: web.StreamResponse | None = None  # once its reply began
    host: str | None = None  # in cluster mode, the host it was placed on (router/cluster/requests.py)
    stats: dict[str, Any] = field(default_factory=dict)


class RequestsTable:
    hosts = False  # the cluster front's lists the host of each request (router/cluster/requests.py)

    def __init__(self) -> None:
        self.entries: dict[str, Tracked] = {}
        self.typical_s: dict[str, float] = {}  # each model's request time (grant to end), averaged
        self.cancelled = 0

    def add(self, entry: Tracked) -> None:
        self.entries[entry.id] = entry

    def done(self, entry: Tracked) -> None:
        if self.entries.get(entry.id) is entry:
            del self.entries[entry.id]
        if entry.granted is not None and not entry.cancelled:
            took = time.monotonic() - entry.granted
            old = self.typical_s.get(entry.model)
            self.typical_s[entry.model] = took if old is None else old + EWMA * (took - old)

    def estimate(self, manager: ModelManager, model: str, position: int) -> float | None:
        """Seconds until a request `position` in `model`'s queue is served: its turn (the requests
        ahead of it over the requests served at once), plus a load when the model is not ready."""
        typical = self.typical_s.get(model)
        if typical is None:
            return None
        wide = max(1, manager.scheduler.inflight(model)) if model in manager.config.models else 1
        seconds = math.ceil(position / wide) * typical
        if manager.state(model) is not State.READY:
            status = manager.status.get(model)
            seconds += (status.last_load_s or 0.0) if status is not None else 0.0
        return seconds

    def where(self, manager: ModelManager | None, entry: Tracked) -> tuple[int, float | None] | None:
        """A waiting request's place in its model's queue (1: next) and the estimate; None when not waiting."""
        if manager is None or entry.ticket is None or entry.state != "waiting":
            return None
        at = manager.scheduler.queue_position(entry.ticket)
        if at is None:
            return None
        entry.last_estimate = self.estimate(manager, entry.model, at.position)
        return at.position, entry.last_estimate

    def listing(self, manager: ModelManager | None) -> list[dict[str, Any]]:
        now = time.monotonic()
        out = []
        for e in list(self.entries.values()):
            place = self.where(manager, e)
            out.append({"id": e.id, "model": e.model, "key": e.key, "state": e.state,
                        "age_s": round(now - e.since, 3), "position": place[0] if place else None,
                        "estimate_s": _rounded(place[1]) if place else None, "tokens": _tokens(e.stats),
                        **({"host": e.host} if self.hosts else {})})
        return out

    def cancel(self, rid: str) -> Tracked | None:
        """Cancel a request: a waiting one leaves its queue, one in flight has its relay to
        the child cut (the child stops generating); its client gets a clean ending."""
        entry = self.entries.get(rid)
        if entry is None or entry.cancelled or entry.task is None or entry.task.done():
            return None
        entry.cancelled = True
        self.cancelled += 1
        entry.task.cancel()
        return entry


REQUESTS = web.AppKey("requests_table", RequestsTable)
TRACKED = web.RequestKey("tracked", Tracked)


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 1)


def _tokens(stats: dict[str, Any]) -> int | None:
    """Completion tokens, when the reply's usage has been seen (a finished reply's tail)."""
    tail = stats.get("tail", b"")
    marker = tail.rfind(b'"completion_tokens":')
    if marker < 0:
        return None
    digits = tail[marker + 20:marker + 32].lstrip().split(b",")[0].split(b"}")[0]
    return int(digits) if digits.isdigit() else None


def key_name(request: web.Request, key: ApiKey | None) -> str | None:
    """The API key's entry as an operator names it: its index in router.api_keys."""
    if key is None:
        return None
    for i, entry in enumerate(state(request, ROUTER_SETTINGS)().api_keys):
        if as_key(entry) == key:
            return f"api_keys[{i}]"
    return "api_keys[?]"  # removed by a reload since


def entry_of(request: web.Request) -> Tracked | None:
    return request.get(TRACKED)


async def serve_tracked(request: web.Request, model: str, work: Callable[[], Awaitable[web.StreamResponse]],
                        stats: dict[str, Any], ollama: bool = False) -> web.StreamResponse:
    """Serve a request as a listed one; an operator's cancel ends it cleanly: a 499 error
    (the API's shape), or a last error event or line in a reply that began."""
    queue_terms(request)  # a bad X-Priority or X-Max-Wait is a 400 before anything else
    table = state_or_none(request, REQUESTS)
    rid = request.get(REQUEST_ID)
    if table is None or rid is None or rid in table.entries:  # a client's id in use: served, not listed twice
        return await work()
    entry = Tracked(rid, model, key_name(request, request.get(API_KEY)), time.monotonic(), asyncio.current_task(),
                    ollama=ollama, stats=stats)
    table.add(entry)
    request[TRACKED] = entry
    try:
        return await work()
    except asyncio.CancelledError:
        if not entry.cancelled:
            raise
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        stats["status"] = CANCELLED
        message = f"request {rid} was cancelled by an operator"
        resp = entry.response
        if resp is None or not resp.prepared:
            raise HTTPError(CANCELLED, message, "cancelled_error", "request_cancelled") from None
        await _end_stream(resp, message, ollama)
        return resp
    finally:
        table.done(entry)


async def _end_stream(resp: web.StreamResponse, message: str, ollama: bool) -> None:
    if ollama:
        data = json.dumps({"error": message}).encode() + b"\n"
    else:
        data = b"data: " + json.dumps(error_body(CANCELLED, message, "cancelled_error",
                                                 "request_cancelled")).encode() + b"\n\n"
    try:
        await resp.write(data)
        await resp.write_eof()
    except (ConnectionError, RuntimeError):
        pass  # the client left too


async def acquire(request: web.Request, spec: ModelSpec, light: bool = False, name: str | None = None) -> Lease:
    """Wait for `spec`'s child under the request's queue terms (priority, tenant, deadline);
    ModelUnavailable as the manager raises it. `name`: what the request named; a selector
    is chosen again here, among the targets its API key may use (router/core/selector.py)."""
    manager = state(request, MANAGER)
    terms = queue_terms(request)
    entry = entry_of(request)
    table = state_or_none(request, REQUESTS)

    def queued(ticket: int) -> None:
        if entry is None or table is None:
            return
        entry.ticket = ticket
        at = manager.scheduler.queue_position(ticket)
        entry.joined = at.position if at is not None else 0
        if at is not None:
            entry.last_estimate = table.estimate(manager, spec.name, at.position)

    asked = name if name is not None and name in manager.config.selectors else spec.name
    key, models, may_serve = request.get(API_KEY), manager.config.models, None
    if key is not None and key.models:
        def may_serve(model: str) -> bool:  # a selector's targets, fallbacks: the key's own models only
            return model in models and may_use(key, models[model])
    lease = await manager.acquire(asked, light=light, priority=terms.priority, tenant=terms.tenant,
                                  deadline=terms.deadline(time.monotonic()), queued=queued, may_serve=may_serve)
    if entry is not None:
        entry.state = "in_flight"
        if not light:  # a model's typical request time counts the requests that take a slot
            entry.granted = time.monotonic()
    return lease


def lease_at_once(request: web.Request, spec: ModelSpec, requested: str) -> Lease | None:
    """A light request's lease when its model serves it now (ModelManager.lease_now): its queue
    terms do not matter (checked all the same when it sends any); None for a selector's."""
    if PRIORITY_HEADER in request.headers or MAX_WAIT_HEADER in request.headers:
        queue_terms(request)  # a bad one is a 400 all the same
    manager = state(request, MANAGER)
    if requested in manager.config.selectors:
        return None
    return manager.lease_now(spec.name)


def unavailable(e: ModelUnavailable, request: web.Request) -> HTTPError:
    """The error a request gets when its model cannot serve it: a full queue is a 429, a
    deadline passed a 503 with Retry-After (both: try again later), a model whose file is
    gone (it and every fallback's, on one host or on every host of a cluster) a 404 as for
    a model without fallbacks, a model that cannot load a 503."""
    if e.cause == FILE_MISSING:
        return HTTPError(404, f"{e}; it is served again once the file is back", "invalid_request_error",
                         "model_missing")
    if e.busy:
        return HTTPError(429, str(e), "rate_limit_error", "model_busy", {"Retry-After": RETRY_AFTER_BUSY_S})
    if e.expired:
        entry = entry_of(request)
        estimate = entry.last_estimate if entry is not None else None
        retry = max(1, math.ceil(estimate)) if estimate else RETRY_AFTER_EXPIRED_S
        return HTTPError(503, str(e), "unavailable_error", "queue_timeout", {"Retry-After": str(retry)})
    return HTTPError(503, str(e), "unavailable_error", "model_unavailable")


async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Every reply of a listed request says where it stood (X-Queue-Position), and is kept
    so that a cancel can end it cleanly."""
    entry = entry_of(request)
    if entry is None:
        return
    entry.response = response
    response.headers[POSITION_HEADER] = str(entry.joined)


def install(app: web.Application) -> None:
    app[REQUESTS] = RequestsTable()
    app.on_response_prepare.append(on_prepare)
